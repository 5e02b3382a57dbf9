package deploy_test

import (
	"context"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
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

// siteFiles is what an operator hands install.sh: an operator directory
// with tenant acme, site s1's bundle (node n1) and a TLS directory.
type siteFiles struct {
	work, bundle, tlsDir string
	op                   *accounts.Operator
	pki                  tlsfiles.Files
}

func newSiteFiles(t *testing.T) siteFiles {
	t.Helper()
	f := siteFiles{work: t.TempDir()}
	var err error
	f.op, err = accounts.Init(filepath.Join(f.work, "operator"), "test", []string{"acme"})
	check.NoError(t, err)
	f.bundle = filepath.Join(f.work, "bundle")
	_, err = f.op.AddSite("s1", "acme", []string{"n1"}, f.bundle)
	check.NoError(t, err)
	f.tlsDir = filepath.Join(f.work, "tls")
	check.NoError(t, os.MkdirAll(f.tlsDir, 0o700))
	f.pki, err = testpki.Write(f.tlsDir)
	check.NoError(t, err)
	return f
}

// modes checks the permission bits of files under root.
func modes(t *testing.T, root string, want map[string]os.FileMode) {
	t.Helper()
	for p, w := range want {
		if got := mode(t, filepath.Join(root, p)); got != w {
			t.Errorf("%s: mode %v, want %v", p, got, w)
		}
	}
}

func TestInstallSiteIsIdempotentAndUpgrades(t *testing.T) {
	f := newSiteFiles(t)
	work, op, bundle, tlsDir := f.work, f.op, f.bundle, f.tlsDir
	var err error
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
	modes(t, root, map[string]os.FileMode{
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
	})
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

// The hub's copy of the operator directory has no private keys and only the
// secrets the hub uses at run time (not the system user's creds, also when
// an older install left them there), and a hub starts from it in operator
// mode.
func TestInstallHubGetsPublicOperatorPart(t *testing.T) {
	work := t.TempDir()
	op, err := accounts.Init(filepath.Join(work, "operator"), "test", []string{"acme"})
	check.NoError(t, err)
	_, err = op.AddSite("s1", "acme", []string{"n1"}, filepath.Join(op.Dir, "bundles", "s1-acme"))
	check.NoError(t, err)
	// The cloud outputs signing seed, shipped when the operator directory has it.
	check.NoError(t, os.WriteFile(filepath.Join(op.Dir, "creds", "hub-outputs.nk"), []byte(seed(t)+"\n"), 0o600))
	bin := filepath.Join(work, "alpha")
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	root := filepath.Join(work, "root")
	installed := filepath.Join(root, "etc/alpha/operator")
	stale := filepath.Join(installed, "creds/sys.creds")
	check.NoError(t, os.MkdirAll(filepath.Dir(stale), 0o700))
	check.NoError(t, os.WriteFile(stale, []byte("from an older install.sh"), 0o600))

	install(t, "--role", "hub", "--destdir", root, "--binary", bin, "--operator-dir", op.Dir)
	for _, gone := range []string{"keys", "bundles", "sites", "creds/sys.creds"} {
		if _, err := os.Stat(filepath.Join(installed, gone)); !os.IsNotExist(err) {
			t.Errorf("hub copy holds %s: %v", gone, err)
		}
	}
	modes(t, installed, map[string]os.FileMode{
		"operator.jwt":           0o644,
		"accounts/acme.jwt":      0o644,
		"creds/acme-admin.creds": 0o600,
		"creds/cluster.secret":   0o600,
		"creds/hub-outputs.nk":   0o600,
	})
	pub, err := accounts.Load(installed)
	check.NoError(t, err)
	if err := pub.Revoke("acme", "UABC"); err == nil {
		t.Error("the hub's copy could change accounts without the operator key")
	}
	_, err = pub.ReadClusterSecret()
	check.NoError(t, err)
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: filepath.Join(work, "store"), Listen: "127.0.0.1:-1",
		LeafListen: "127.0.0.1:-1", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Options:       pub.HubOptions(filepath.Join(work, "store", "resolver")),
		ClientOptions: []nats.Option{nats.UserCredentials(pub.AdminCreds("acme"))}})
	check.NoError(t, err)
	h.Shutdown()
}

// seed is a fresh nkey user seed.
func seed(t *testing.T) string {
	t.Helper()
	kp, err := nkeys.CreateUser()
	check.NoError(t, err)
	s, err := kp.Seed()
	check.NoError(t, err)
	return string(s)
}

// privateRE finds private material the way an attacker reading the files
// would, independently of install.sh's own rules: an nkey seed or a PEM
// private key.
var privateRE = regexp.MustCompile(`(^|[^A-Z2-7])S[OAUNCXP][A-Z2-7]{56}([^A-Z2-7]|$)|PRIVATE KEY-----`)

// Red team: secrets hidden under innocuous names (a seed in notes.txt, a
// key appended to a certificate's file) are installed readable by root
// only, public files stay readable, and the hub never gets a secret it
// does not use, whatever its name.
func TestInstallSecretsByContent(t *testing.T) {
	f := newSiteFiles(t)
	work, op, bundle, tlsDir := f.work, f.op, f.bundle, f.tlsDir
	cert, err := os.ReadFile(f.pki.Cert)
	check.NoError(t, err)
	key, err := os.ReadFile(f.pki.Key)
	check.NoError(t, err)
	siteSeed, opSeed := seed(t), seed(t)
	sys, err := nkeys.ParseDecoratedNKey([]byte(readFile(t, op.SysCreds())))
	check.NoError(t, err)
	sysSeed, err := sys.Seed()
	check.NoError(t, err)
	for p, content := range map[string]string{
		filepath.Join(bundle, "notes.txt"):        "backup of the agent key: " + siteSeed + "\n",
		filepath.Join(tlsDir, "combined.pem"):     string(cert) + string(key),
		filepath.Join(tlsDir, "README"):           "the CA is ca.pem\n",
		filepath.Join(op.Dir, "notes.txt"):        opSeed + "\n",
		filepath.Join(op.Dir, "accounts/old.txt"): "the system user: " + readFile(t, op.SysCreds()),
	} {
		check.NoError(t, os.WriteFile(p, []byte(content), 0o644))
	}
	bin := filepath.Join(work, "alpha")
	check.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
	root := filepath.Join(work, "root")
	install(t, "--role", "site", "--destdir", root, "--binary", bin, "--bundle", bundle, "--tls-dir", tlsDir, "--args", "--insecure")
	install(t, "--role", "hub", "--destdir", root, "--binary", bin, "--operator-dir", op.Dir, "--args", "--insecure")

	etc := filepath.Join(root, "etc/alpha")
	modes(t, etc, map[string]os.FileMode{
		"bundle/notes.txt":    0o600,
		"tls/combined.pem":    0o600,
		"tls/README":          0o644,
		"tls/ca.pem":          0o644,
		"tls/server.pem":      0o644,
		"bundle/trusted-keys": 0o644,
		"bundle/site.json":    0o644,
	})
	// Every installed file with private material in it, planted or not.
	secrets := 0
	check.NoError(t, filepath.WalkDir(etc, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		content := readFile(t, p)
		if strings.Contains(content, opSeed) || strings.Contains(content, string(sysSeed)) {
			t.Errorf("the hub got a secret it does not use: %s", p)
		}
		if privateRE.MatchString(content) {
			secrets++
			if m := mode(t, p); m != 0o600 {
				t.Errorf("%s holds private material with mode %v, want 0600", p, m)
			}
		}
		return nil
	}))
	// leaf.creds, agent-n1.nk, notes.txt, server-key.pem, combined.pem,
	// acme-admin.creds (the hex cluster.secret is known by name only).
	if secrets < 6 {
		t.Errorf("found only %d installed files with private material, want 6: the walk checks too little", secrets)
	}
	if _, err := os.Stat(filepath.Join(etc, "operator/notes.txt")); !os.IsNotExist(err) {
		t.Errorf("the operator directory's notes.txt (a seed) reached the hub: %v", err)
	}
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	check.NoError(t, err)
	return string(b)
}
