package deploy_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/check"
)

// freePort picks a free loopback port.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check.NoError(t, err)
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// TestProductionWalkthrough runs PRODUCTION.md's commands as written, with
// the binary from `make build`, on free loopback ports instead of the
// documented ones: a hub and a site as two processes, a signed blueprint
// applied, an unsigned one refused, the site revoked and cut off.
func TestProductionWalkthrough(t *testing.T) {
	bin, err := filepath.Abs("../bin/alpha")
	check.NoError(t, err)
	_, err = os.Stat(bin)
	check.Need(t, err == nil, "bin/alpha", "run make build (make test does)")
	check.NeedCommand(t, "openssl", "install openssl (.ci/setup-deploy.sh)")
	check.NeedCommand(t, "nats", "go install github.com/nats-io/natscli/nats@v0.5.1")
	doc, err := os.ReadFile("PRODUCTION.md")
	check.NoError(t, err)
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 7 {
		t.Fatalf("PRODUCTION.md has %d sh blocks, want the 7 steps", len(blocks))
	}

	// The documented layout: the repository's bin/ and examples/ one level
	// up from the working directory prod/.
	work := t.TempDir()
	check.NoError(t, os.MkdirAll(filepath.Join(work, "bin"), 0o755))
	check.NoError(t, os.Symlink(bin, filepath.Join(work, "bin", "alpha")))
	examples, err := filepath.Abs("../examples")
	check.NoError(t, err)
	check.NoError(t, os.Symlink(examples, filepath.Join(work, "examples")))
	ports := strings.NewReplacer("4222", freePort(t), "7422", freePort(t), "4223", freePort(t))
	prod := filepath.Join(work, "prod")

	run := func(i int, dir string) string {
		t.Helper()
		script := ports.Replace(strings.Replace(blocks[i][1], "make build\n", "", 1))
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("step block %d failed: %v\n%s\n%s", i, err, script, out)
		}
		return string(out)
	}
	// start runs a long-lived block in its own process group, stopped by
	// its id at the end of the test.
	start := func(i int, log string) *os.File {
		t.Helper()
		f, err := os.Create(filepath.Join(work, log))
		check.NoError(t, err)
		cmd := exec.Command("bash", "-e", "-c", ports.Replace(blocks[i][1]))
		cmd.Dir, cmd.Stdout, cmd.Stderr = prod, f, f
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		check.NoError(t, cmd.Start())
		t.Cleanup(func() {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			cmd.Wait()
		})
		return f
	}
	waitLog := func(name, want string) {
		t.Helper()
		check.For(t, 15*time.Second, 50*time.Millisecond, func() error {
			b, _ := os.ReadFile(filepath.Join(work, name))
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("%s: no %q yet:\n%s", name, want, b)
			}
			return nil
		})
	}

	run(0, work)                         // TLS
	run(1, prod)                         // accounts init
	start(2, "hub.log")                  // hub
	waitLog("hub.log", "hub ready")      //
	run(3, prod)                         // site add, copy bundle
	start(4, "site.log")                 // site
	waitLog("site.log", "uplink synced") //
	out := run(5, prod)                  // sign, put, cat, status
	for _, want := range []string{"signed and put as revision 1", "greeting=hi", `"phase":"Converged"`} {
		if !strings.Contains(out, want) {
			t.Fatalf("publishing step: no %q in:\n%s", want, out)
		}
	}
	// An unsigned value is refused and the file stays.
	cmd := exec.Command("nats", "--server", "tls://127.0.0.1:"+ports.Replace("4222"), "--creds", "operator/creds/acme-admin.creds",
		"--tlsca", "tls/ca.pem", "--js-domain", "hub", "kv", "put", "blueprints", "s1.n1", "not signed")
	cmd.Dir = prod
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nats kv put: %v\n%s", err, b)
	}
	waitLog("site.log", "not a signed blueprint")
	b, err := os.ReadFile(filepath.Join(prod, "site/root/etc/hello.conf"))
	check.NoError(t, err)
	check.Equal(t, string(b), "greeting=hi\n")
	// Revoke: cut off at once and refused from then on.
	out = run(6, prod)
	if !strings.Contains(out, "cut off") {
		t.Fatalf("revoke: %s", out)
	}
	waitLog("site.log", "Authorization Violation")
}
