package deploy_test

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// install runs install.sh and returns its output.
func install(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("sh", append([]string{"install.sh"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("install.sh %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// tree lists every file under root with its mode and content.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	check.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		v := info.Mode().String()
		if !d.IsDir() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			v += " " + string(b)
		}
		m[rel] = v
		return nil
	}))
	return m
}

func mode(t *testing.T, p string) os.FileMode {
	t.Helper()
	info, err := os.Stat(p)
	check.NoError(t, err)
	return info.Mode().Perm()
}

func TestInstallSiteIsIdempotentAndUpgrades(t *testing.T) {
	work := t.TempDir()
	op, err := accounts.Init(filepath.Join(work, "operator"), "test", []string{"acme"})
	check.NoError(t, err)
	bundle := filepath.Join(work, "bundle")
	_, err = op.AddSite("s1", "acme", []string{"n1"}, bundle)
	check.NoError(t, err)
	tlsDir := filepath.Join(work, "tls")
	check.NoError(t, os.MkdirAll(tlsDir, 0o700))
	_, err = tlsfiles.WriteTestPKI(tlsDir)
	check.NoError(t, err)
	bin := filepath.Join(work, "alpha")
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho v1\n"), 0o755))

	root := filepath.Join(work, "root")
	args := []string{"--role", "site", "--destdir", root, "--binary", bin, "--bundle", bundle, "--tls-dir", tlsDir,
		"--args", "--bundle /etc/alpha/bundle --node n1 --hub nats-leaf://hub.example:7422 --tls-ca /etc/alpha/tls/ca.pem"}
	out := install(t, args...)
	if !strings.Contains(out, "created "+root+"/usr/local/bin/alpha") {
		t.Fatalf("first install did not create the binary:\n%s", out)
	}

	// Everything in place, secrets readable by root only.
	for p, want := range map[string]os.FileMode{
		"usr/local/bin/alpha":                    0o755,
		"etc/systemd/system/alpha-hub.service":   0o644,
		"etc/systemd/system/alpha-leaf.service":  0o644,
		"etc/systemd/system/alpha-agent.service": 0o644,
		"etc/systemd/system/alpha-site.service":  0o644,
		"etc/alpha/site.env":                     0o644,
		"etc/alpha/bundle":                       0o700,
		"etc/alpha/bundle/leaf.creds":            0o600,
		"etc/alpha/bundle/agent-n1.nk":           0o600,
		"etc/alpha/bundle/site.json":             0o644,
		"etc/alpha/bundle/trusted-keys":          0o644,
		"etc/alpha/tls/server-key.pem":           0o600,
		"etc/alpha/tls/ca.pem":                   0o644,
		"var/lib/alpha":                          0o700,
	} {
		if got := mode(t, filepath.Join(root, p)); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	env, err := os.ReadFile(filepath.Join(root, "etc/alpha/site.env"))
	check.NoError(t, err)
	if !strings.Contains(string(env), "ALPHA_ARGS=--bundle /etc/alpha/bundle --node n1 --hub nats-leaf://hub.example:7422") {
		t.Fatalf("site.env:\n%s", env)
	}
	unit, err := os.ReadFile(filepath.Join(root, "etc/systemd/system/alpha-site.service"))
	check.NoError(t, err)
	for _, want := range []string{"EnvironmentFile=/etc/alpha/site.env", "ExecStart=/usr/local/bin/alpha site $ALPHA_ARGS"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("alpha-site.service lacks %q", want)
		}
	}

	// Again: nothing changes.
	before := tree(t, root)
	out = install(t, args...)
	if strings.Contains(out, "created") || strings.Contains(out, "updated") {
		t.Fatalf("second run changed things:\n%s", out)
	}
	after := tree(t, root)
	if d := diff(before, after); d != "" {
		t.Fatalf("second run changed the tree: %s", d)
	}

	// Upgrade: a new binary replaces the old; a locally edited config stays;
	// a rotated bundle replaces the old credentials and drops stale ones.
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\necho v2\n"), 0o755))
	edited := "ALPHA_ARGS=--bundle /etc/alpha/bundle --node n1 --hub nats-leaf://other:7422\n"
	check.NoError(t, os.WriteFile(filepath.Join(root, "etc/alpha/site.env"), []byte(edited), 0o644))
	check.NoError(t, os.RemoveAll(bundle))
	_, err = op.AddSite("s1", "acme", []string{"n2"}, bundle)
	check.NoError(t, err)
	out = install(t, args...)
	if !strings.Contains(out, "updated "+root+"/usr/local/bin/alpha") {
		t.Fatalf("upgrade did not replace the binary:\n%s", out)
	}
	got, err := os.ReadFile(filepath.Join(root, "usr/local/bin/alpha"))
	check.NoError(t, err)
	check.Equal(t, string(got), "#!/bin/sh\necho v2\n")
	env, err = os.ReadFile(filepath.Join(root, "etc/alpha/site.env"))
	check.NoError(t, err)
	check.Equal(t, string(env), edited)
	if _, err := os.Stat(filepath.Join(root, "etc/alpha/bundle/agent-n1.nk")); !os.IsNotExist(err) {
		t.Errorf("stale agent-n1.nk kept after rotation: %v", err)
	}
	check.Equal(t, mode(t, filepath.Join(root, "etc/alpha/bundle/agent-n2.nk")), 0o600)
	newCreds, _ := os.ReadFile(filepath.Join(bundle, accounts.LeafCredsFile))
	installed, _ := os.ReadFile(filepath.Join(root, "etc/alpha/bundle", accounts.LeafCredsFile))
	check.Equal(t, string(installed), string(newCreds))
}

func TestInstallRefusesBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"--role", "cloud", "--destdir", t.TempDir()},
		{"--role", "hub", "--destdir", t.TempDir(), "--binary", "/nonexistent/alpha"},
		{"--role", "hub", "--frobnicate"},
	} {
		out, err := exec.Command("sh", append([]string{"install.sh"}, args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("install.sh %v succeeded:\n%s", args, out)
		}
		if !strings.Contains(string(out), "install.sh:") {
			t.Errorf("install.sh %v: no clear error:\n%s", args, out)
		}
	}
}

// The units parse cleanly (systemd-analyze verify, with ExecStart pointed
// at an installed copy of the binary).
func TestUnitsVerify(t *testing.T) {
	sa := check.NeedCommand(t, "systemd-analyze", "install systemd (.ci/setup-deploy.sh)")
	dir := t.TempDir()
	bin := filepath.Join(dir, "alpha")
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	units, err := filepath.Glob("systemd/*.service")
	check.NoError(t, err)
	sort.Strings(units)
	if len(units) != 4 {
		t.Fatalf("units %v, want hub, leaf, agent, site", units)
	}
	for _, u := range units {
		b, err := os.ReadFile(u)
		check.NoError(t, err)
		p := filepath.Join(dir, filepath.Base(u))
		check.NoError(t, os.WriteFile(p, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/alpha", bin)), 0o644))
		out, err := exec.Command(sa, "verify", "--man=no", p).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Errorf("%s: %v\n%s", u, err, out)
		}
	}
}

func diff(a, b map[string]string) string {
	var d []string
	for k, v := range a {
		if b[k] != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k)
		}
	}
	sort.Strings(d)
	return strings.Join(d, ", ")
}

// The hub's copy of the operator directory has no private keys, and a hub
// starts from it in operator mode.
func TestInstallHubGetsPublicOperatorPart(t *testing.T) {
	work := t.TempDir()
	op, err := accounts.Init(filepath.Join(work, "operator"), "test", []string{"acme"})
	check.NoError(t, err)
	_, err = op.AddSite("s1", "acme", []string{"n1"}, filepath.Join(op.Dir, "bundles", "s1-acme"))
	check.NoError(t, err)
	bin := filepath.Join(work, "alpha")
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	root := filepath.Join(work, "root")
	install(t, "--role", "hub", "--destdir", root, "--binary", bin, "--operator-dir", op.Dir)
	installed := filepath.Join(root, "etc/alpha/operator")
	for _, gone := range []string{"keys", "bundles", "sites"} {
		if _, err := os.Stat(filepath.Join(installed, gone)); !os.IsNotExist(err) {
			t.Errorf("hub copy holds %s: %v", gone, err)
		}
	}
	check.Equal(t, mode(t, filepath.Join(installed, "creds/acme-admin.creds")), 0o600)
	pub, err := accounts.Load(installed)
	check.NoError(t, err)
	if err := pub.Revoke("acme", "UABC"); err == nil {
		t.Error("the hub's copy could change accounts without the operator key")
	}
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: filepath.Join(work, "store"), Listen: "127.0.0.1:-1",
		LeafListen: "127.0.0.1:-1", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options:       pub.HubOptions(filepath.Join(work, "store", "resolver")),
		ClientOptions: []nats.Option{nats.UserCredentials(pub.AdminCreds("acme"))}})
	check.NoError(t, err)
	h.Shutdown()
}
