package redteam

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/streams"
)

// The hostile tenant admin at the hub's cloud reconciler (issue 12 findings
// 1 and 5, issue 11 "Cloud"). Each test runs the real `alpha hub` binary in
// operator mode with TLS and two tenants, x (the attacker) and y (the
// victim), and real Terraform.

// csSetup is an operator directory with tenants x and y, the hub's copy of
// it and a test PKI.
type csSetup struct {
	dir string
	op  *accounts.Operator
	// hubOp is what deploy/install.sh gives a hub: operator.jwt, accounts/
	// and creds/, no private keys.
	hubOp string
	tls   tlsfiles.Files
	tf    string
}

func csNew(t *testing.T) *csSetup {
	t.Helper()
	check.NeedRoot(t)
	tf := check.NeedCommand(t, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh)")
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "redteam", []string{"x", "y"})
	check.NoError(t, err)
	check.NoError(t, os.Mkdir(filepath.Join(dir, "tls"), 0o700))
	files, err := testpki.Write(filepath.Join(dir, "tls"))
	check.NoError(t, err)
	hubOp := filepath.Join(dir, "hub-operator")
	for _, p := range []string{"operator.jwt", "accounts", "creds"} {
		csCopy(t, filepath.Join(op.Dir, p), filepath.Join(hubOp, p))
	}
	return &csSetup{dir: dir, op: op, hubOp: hubOp, tls: files, tf: tf}
}

// csCopy copies a file or a tree keeping each file's mode: the creds stay
// 0600 as install.sh leaves them.
func csCopy(t *testing.T, src, dst string) {
	t.Helper()
	check.NoError(t, filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, 0o700)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(to, data, fi.Mode().Perm())
	}))
}

// csHub is one `alpha hub` process and the client URL it bound.
type csHub struct {
	*chaos.Proc
	url string
}

// hub starts the hub; env is added to its environment, extra to its flags.
func (s *csSetup) hub(t *testing.T, env []string, extra ...string) *csHub {
	t.Helper()
	args := append([]string{"hub", "--store", filepath.Join(s.dir, "hub"), "--operator-dir", s.hubOp,
		"--tls-cert", s.tls.Cert, "--tls-key", s.tls.Key,
		"--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1", "--terraform", s.tf}, extra...)
	h := &csHub{Proc: chaos.StartWrapped(t, s.dir, "hub", nil, env, args...)}
	h.ready(t)
	return h
}

func (h *csHub) ready(t *testing.T) {
	t.Helper()
	h.url = chaos.LogField(h.WaitLog("hub ready", 60*time.Second), "clients")
}

// admin connects with a tenant administrator's credentials, as the attacker
// (x) or the victim (y) would.
func (s *csSetup) admin(t *testing.T, h *csHub, tenant string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(h.url, nats.UserCredentials(s.op.AdminCreds(tenant)), nats.RootCAs(s.tls.CA))
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	return js
}

// signed wraps doc for key with the tenant's publisher key.
func (s *csSetup) signed(t *testing.T, tenant, key string, doc []byte) []byte {
	t.Helper()
	seed, err := os.ReadFile(s.op.PublisherSeed(tenant))
	check.NoError(t, err)
	env, err := sign.Sign(seed, key, 0, doc)
	check.NoError(t, err)
	return env
}

func csPut(t *testing.T, js jetstream.JetStream, key string, value []byte) {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = kv.Put(context.Background(), key, value)
	check.NoError(t, err)
}

// csStatus reads the cloud status under key.
func csStatus(js jetstream.JetStream, key string) (cloud.Status, error) {
	kv, err := js.KeyValue(context.Background(), cloud.StatusBucket)
	if err != nil {
		return cloud.Status{}, err
	}
	e, err := kv.Get(context.Background(), key)
	if err != nil {
		return cloud.Status{}, fmt.Errorf("cloud status %s: %w", key, err)
	}
	st, _, err := cloud.ParseStatus(e.Value()) // signed by the hub in operator mode
	return st, err
}

// csWait waits until the cloud status under key satisfies ok.
func csWait(t *testing.T, js jetstream.JetStream, key string, ok func(cloud.Status) error) cloud.Status {
	t.Helper()
	var st cloud.Status
	check.For(t, 90*time.Second, 100*time.Millisecond, func() error {
		var err error
		if st, err = csStatus(js, key); err != nil {
			return err
		}
		return ok(st)
	})
	return st
}

// csWaitOrLoot is csWait that also stops when the attack's output file
// appears, so a successful attack is reported by what it stole.
func csWaitOrLoot(t *testing.T, js jetstream.JetStream, key, loot string, ok func(cloud.Status) error) {
	t.Helper()
	check.For(t, 90*time.Second, 100*time.Millisecond, func() error {
		if _, err := os.Stat(loot); err == nil {
			return nil
		}
		st, err := csStatus(js, key)
		if err != nil {
			return err
		}
		return ok(st)
	})
}

// csNoLoot fails with what the attack got if it left anything in dir.
func csNoLoot(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	check.NoError(t, err)
	for _, e := range ents {
		data, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		t.Errorf("the attack ran: %s holds %d bytes:\n%s", e.Name(), len(data), data)
	}
}

func csPhase(phase cloud.Phase, errHas ...string) func(cloud.Status) error {
	return func(st cloud.Status) error {
		if st.Phase != phase {
			return fmt.Errorf("phase %s (error %q), want %s", st.Phase, st.Error, phase)
		}
		for _, s := range errHas {
			if !strings.Contains(st.Error, s) {
				return fmt.Errorf("error %q does not say %q", st.Error, s)
			}
		}
		return nil
	}
}

// csExecDoc is a blueprint whose cloud configuration runs command on the
// machine running Terraform.
func csExecDoc(config, command string) []byte {
	return []byte(fmt.Sprintf(`apiVersion: alpha/v1
kind: Blueprint
metadata: {name: %[1]s}
spec:
  cloud:
    - name: %[1]s
      outputs: [id]
      main: |
        resource "terraform_data" "x" {
          provisioner "local-exec" {
            command = %[2]q
          }
        }
        output "id" { value = terraform_data.x.id }
`, config, command))
}

const csBenignDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: benign}
spec:
  cloud:
    - name: logs
      outputs: [bucket_name]
      main: |
        resource "terraform_data" "bucket" {
          input = { name = "logs-of-%s" }
        }
        output "bucket_name" { value = terraform_data.bucket.output.name }
`

// csLootDir is a directory the confined user may write to, where an attack
// leaves what it got.
func csLootDir(t *testing.T, s *csSetup) string {
	t.Helper()
	d := filepath.Join(s.dir, "loot")
	check.NoError(t, os.Mkdir(d, 0o777))
	check.NoError(t, os.Chmod(d, 0o777))
	return d
}

// Finding 1, the attack as reported: tenant x's admin puts, unsigned, a
// configuration that copies every credential of the operator directory.
// Operator mode provisions only signed blueprints, so nothing runs; the
// same configuration signed by x's publisher is refused for its
// provisioner, since the operator allowed exec to no tenant.
func TestCSTenantAdminLocalExecRefused(t *testing.T) {
	s := csNew(t)
	h := s.hub(t, nil)
	x := s.admin(t, h, "x")
	loot := csLootDir(t, s)
	steal := func(out string) string {
		return fmt.Sprintf("cat %[1]s/creds/*.creds %[1]s/creds/y-admin.creds > %[2]s/%[3]s 2>&1", s.hubOp, loot, out)
	}

	csPut(t, x, "s1.n1", csExecDoc("steal", steal("unsigned")))
	refusal := csPhase(cloud.PhaseInvalid, "signed", sign.ErrUnsigned.Error())
	csWaitOrLoot(t, x, cloud.Key("s1", "n1", cloud.RefusedConfig), filepath.Join(loot, "unsigned"), refusal)
	csNoLoot(t, loot)
	st := csWait(t, x, cloud.Key("s1", "n1", cloud.RefusedConfig), refusal)
	t.Logf("unsigned: %s: %s", st.Message, st.Error)

	csPut(t, x, "s1.n2", s.signed(t, "x", "s1.n2", csExecDoc("steal", steal("signed"))))
	st = csWait(t, x, cloud.Key("s1", "n2", "steal"), csPhase(cloud.PhaseFailed, "refused", "local-exec", "--cloud-allow-exec"))
	t.Logf("signed: %s", st.Error)
	csNoLoot(t, loot)
	if n := h.CountLog("blueprint refused"); n == 0 {
		t.Error("the hub's log does not say the unsigned blueprint was refused")
	}
}

// Finding 1, confinement: even where the operator allows exec for tenant
// x, its command runs as an unprivileged user with a scrubbed environment
// and gets none of the operator directory's secrets, tenant y's or the
// system account's, nor anything of the hub's own environment.
func TestCSConfinedExecReadsNoSecrets(t *testing.T) {
	s := csNew(t)
	const canary = "ALPHA_CS_CANARY=hub-environment-secret-5f2c"
	h := s.hub(t, []string{canary}, "--cloud-allow-exec", "x")
	x := s.admin(t, h, "x")
	loot := csLootDir(t, s)
	out := filepath.Join(loot, "loot")
	cmd := fmt.Sprintf("{ id; cat %[1]s/creds/sys.creds %[1]s/creds/y-admin.creds %[1]s/creds/x-admin.creds %[4]s/keys/*.nk; ls %[2]s; env; } > %[3]s 2>&1; true",
		s.hubOp, filepath.Join(s.dir, "hub"), out, s.op.Dir)
	csPut(t, x, "s1.n1", s.signed(t, "x", "s1.n1", csExecDoc("steal", cmd)))
	csWait(t, x, cloud.Key("s1", "n1", "steal"), csPhase(cloud.PhaseApplied))

	got, err := os.ReadFile(out)
	check.NoError(t, err) // it ran: exec is allowed for x
	t.Logf("what the confined command got:\n%s", got)
	if !bytes.Contains(got, []byte("Permission denied")) {
		t.Error("no read was denied")
	}
	if bytes.Contains(got, []byte("uid=0(")) || !bytes.Contains(got, []byte("uid=")) {
		t.Error("the command did not run as an unprivileged user")
	}
	secrets := map[string][]byte{"hub environment": []byte(strings.TrimPrefix(canary, "ALPHA_CS_CANARY="))}
	for _, f := range []string{s.op.SysCreds(), s.op.AdminCreds("y"), s.op.AdminCreds("x"), s.op.PublisherSeed("y"), s.op.PublisherSeed("x")} {
		data, err := os.ReadFile(f)
		check.NoError(t, err)
		// Every long line of a creds or seed file is a JWT or a seed.
		for _, l := range bytes.Split(data, []byte("\n")) {
			if l = bytes.TrimSpace(l); len(l) > 40 {
				secrets[filepath.Base(f)] = l
			}
		}
	}
	for name, secret := range secrets {
		if bytes.Contains(got, secret) {
			t.Errorf("the confined command read a secret of %s", name)
		}
	}
	for _, v := range []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + filepath.Join(s.dir, "hub-cloud", "x", "runs")} {
		if !bytes.Contains(got, []byte(v)) {
			t.Errorf("environment lacks %s", v)
		}
	}
}

// Issue 11 "Cloud": a signed blueprint with spec.cloud is provisioned in
// operator mode, in its own tenant's account; the same value unsigned is not.
func TestCSSignedCloudProvisioned(t *testing.T) {
	s := csNew(t)
	h := s.hub(t, nil)
	y := s.admin(t, h, "y")
	csPut(t, y, "s1.n1", s.signed(t, "y", "s1.n1", []byte(fmt.Sprintf(csBenignDoc, "y"))))
	st := csWait(t, y, cloud.Key("s1", "n1", "logs"), csPhase(cloud.PhaseApplied))
	check.Equal(t, st.Outputs["bucket_name"], "logs-of-y")

	// Signed for another node: the key binding is checked too.
	csPut(t, y, "s1.n2", s.signed(t, "y", "s1.n1", []byte(fmt.Sprintf(csBenignDoc, "n2"))))
	csWait(t, y, cloud.Key("s1", "n2", cloud.RefusedConfig), csPhase(cloud.PhaseInvalid, sign.ErrWrongKey.Error()))
	// Signed by the other tenant's publisher: untrusted here.
	csPut(t, y, "s1.n3", s.signed(t, "x", "s1.n3", []byte(fmt.Sprintf(csBenignDoc, "n3"))))
	csWait(t, y, cloud.Key("s1", "n3", cloud.RefusedConfig), csPhase(cloud.PhaseInvalid, sign.ErrUntrusted.Error()))
}

// csAliasBomb is finding 5's document: 490 KB repeating one 250 KB string
// 80,000 times through aliases.
func csAliasBomb() []byte {
	var b bytes.Buffer
	b.WriteString("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: bomb}\nspec:\n  files:\n    - path: /big\n      content: &a ")
	b.WriteString(strings.Repeat("x", 250_000))
	b.WriteString("\n  containers:\n    - name: c\n      image: busybox\n      args: [")
	for i := range 80_000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("*a")
	}
	b.WriteString("]\n  cloud:\n    - name: bomb\n      main: 'resource \"terraform_data\" \"x\" {}'\n")
	return b.Bytes()
}

// csPeakRSS is the process's peak resident memory (VmHWM).
func csPeakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check.NoError(t, err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			check.NoError(t, err)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// Finding 5: tenant x puts the alias bomb, signed and unsigned. The hub
// refuses both, stays up, keeps serving tenant y, and a restart re-reads
// the values without dying (no crash loop).
func TestCSAliasBombDoesNotKillHub(t *testing.T) {
	s := csNew(t)
	bomb := csAliasBomb()
	// The validator says so at once too.
	path := filepath.Join(s.dir, "bomb.yaml")
	check.NoError(t, os.WriteFile(path, bomb, 0o600))
	out, err := exec.Command(chaos.Binary(t), "blueprint", "validate", path).CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("expands to more than 2097152 bytes")) {
		t.Fatalf("alpha blueprint validate on the bomb: %v\n%s", err, out)
	}

	h := s.hub(t, nil)
	x, y := s.admin(t, h, "x"), s.admin(t, h, "y")
	csPut(t, x, "s1.n1", s.signed(t, "x", "s1.n1", bomb))
	csPut(t, x, "s1.n2", bomb)
	refusedBomb := csWait(t, x, cloud.Key("s1", "n1", cloud.RefusedConfig), csPhase(cloud.PhaseInvalid, "expands to more than 2097152 bytes"))
	csWait(t, x, cloud.Key("s1", "n2", cloud.RefusedConfig), csPhase(cloud.PhaseInvalid, sign.ErrUnsigned.Error()))

	csPut(t, y, "s1.n1", s.signed(t, "y", "s1.n1", []byte(fmt.Sprintf(csBenignDoc, "y"))))
	csWait(t, y, cloud.Key("s1", "n1", "logs"), csPhase(cloud.PhaseApplied))
	if !h.Running() {
		t.Fatal("the hub died")
	}
	peak := csPeakRSS(t, h.PID())
	t.Logf("hub peak RSS after the bomb: %d MiB", peak>>20)
	if peak > 1<<30 {
		t.Errorf("hub peak RSS %d MiB after the bomb; want under 1 GiB", peak>>20)
	}

	// A restart re-reads every blueprint: the new incarnation refuses the
	// bomb again (a new hub instance in the status) and stays up.
	h.Restart()
	h.ready(t)
	x, y = s.admin(t, h, "x"), s.admin(t, h, "y")
	csWait(t, x, cloud.Key("s1", "n1", cloud.RefusedConfig), func(st cloud.Status) error {
		if st.Hub == refusedBomb.Hub {
			return fmt.Errorf("status still from the first incarnation (%s)", st.Hub)
		}
		return csPhase(cloud.PhaseInvalid, "expands to more than")(st)
	})
	csPut(t, y, "s1.n2", s.signed(t, "y", "s1.n2", []byte(fmt.Sprintf(csBenignDoc, "y2"))))
	csWait(t, y, cloud.Key("s1", "n2", "logs"), csPhase(cloud.PhaseApplied))
	if !h.Running() {
		t.Fatal("the hub died after the restart")
	}
	t.Logf("hub peak RSS after the restart: %d MiB", csPeakRSS(t, h.PID())>>20)
}
