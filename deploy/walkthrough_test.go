package deploy_test

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
)

// TestProductionWalkthrough runs the README's "Going to production" section
// as written, with the binary from `make build`, on loopback ports the
// processes choose instead of the documented ones and with a private podman
// service: a hub and a site as two processes, a signed blueprint applied and an unsigned
// one refused, a hold set and released at the site while the hub is down,
// a container from an artifact, a cloud output the hub signed filled into a
// file, the site's telemetry read at the hub with the tenant admin's
// credentials, and the site revoked and cut off.
func TestProductionWalkthrough(t *testing.T) {
	bin, err := filepath.Abs("../bin/alpha")
	check.NoError(t, err)
	_, err = os.Stat(bin)
	check.Need(t, err == nil, "bin/alpha", "run make build (make test does)")
	check.NeedCommand(t, "openssl", "install openssl (.ci/setup-deploy.sh)")
	check.NeedCommand(t, "nats", "go install github.com/nats-io/natscli/nats@v0.5.1")
	pm := podmantest.Start(t)
	readme, err := os.ReadFile("../README.md")
	check.NoError(t, err)
	section, _, _ := strings.Cut(string(readme[strings.Index(string(readme), "## Going to production"):]), "\n## ")
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section, -1)
	const (
		tlsStep = iota
		initStep
		hubStep
		siteAddStep
		siteStep
		publishStep
		holdStep
		heldStep
		releaseStep
		artifactStep
		cloudStep
		cloudFileStep
		telemetryStep
		revokeStep
		installStep
		// The "Fleets and rollouts" section, run before the revoke.
		labelStep
		fleetApplyStep
		rolloutStatusStep
		// The "Air-gapped sites" section, run after the fleet.
		gapAddStep
		gapExportStep
		gapSiteStep
		gapImportStep
		gapUplinkStep
	)
	if len(blocks) != installStep+1 {
		t.Fatalf("the README's production section has %d sh blocks, want %d (the steps this test runs)", len(blocks), installStep+1)
	}
	fleets, _, _ := strings.Cut(string(readme[strings.Index(string(readme), "## Fleets and rollouts"):]), "\n## ")
	blocks = append(blocks, regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(fleets, -1)...)
	if len(blocks) != rolloutStatusStep+1 {
		t.Fatalf("the README's fleets section has %d sh blocks, want %d", len(blocks)-installStep-1, rolloutStatusStep-installStep)
	}
	gap, _, _ := strings.Cut(string(readme[strings.Index(string(readme), "## Air-gapped sites"):]), "\n## ")
	blocks = append(blocks, regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(gap, -1)...)
	if len(blocks) != gapUplinkStep+1 {
		t.Fatalf("the README's air-gapped section has %d sh blocks, want %d", len(blocks)-rolloutStatusStep-1, gapUplinkStep-rolloutStatusStep)
	}

	// The documented layout: the repository's bin/ and examples/ one level
	// up from the working directory prod/.
	work := t.TempDir()
	check.NoError(t, os.MkdirAll(filepath.Join(work, "bin"), 0o755))
	check.NoError(t, os.Symlink(bin, filepath.Join(work, "bin", "alpha")))
	examples, err := filepath.Abs("../examples")
	check.NoError(t, err)
	check.NoError(t, os.Symlink(examples, filepath.Join(work, "examples")))
	// The documented ports (the hub's clients 4222 and leafnodes 7422, the
	// site leaf's clients 4223): -1 until a process has bound one of its own
	// choosing, then the port its ready line reports, which a restart reuses.
	// No port is guessed free beforehand: another process could take it.
	ports := map[string]string{"4222": "-1", "7422": "-1", "4223": "-1", "4224": "-1"}
	subst := func(script string) string {
		return strings.NewReplacer("4222", ports["4222"], "7422", ports["7422"], "4223", ports["4223"], "4224", ports["4224"],
			"unix:///run/podman/podman.sock", pm.URI).Replace(script)
	}
	// bound records the port a ready line reports for a documented one.
	bound := func(line, key, documented string) {
		t.Helper()
		u, err := url.Parse(chaos.LogField(line, key))
		if err != nil || u.Port() == "" || u.Port() == "-1" || u.Port() == "0" {
			t.Fatalf("no bound %s address in %q", key, line)
		}
		ports[documented] = u.Port()
	}
	prod := filepath.Join(work, "prod")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, name := range []string{"hub.log", "site.log"} {
			b, _ := os.ReadFile(filepath.Join(work, name))
			lines := strings.Split(string(b), "\n")
			t.Logf("%s (last 40 lines):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	})

	try := func(i int, dir string) (string, error) {
		script := subst(strings.Replace(blocks[i][1], "make build\n", "", 1))
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("step block %d failed: %v\n%s\n%s", i, err, script, out)
		}
		return string(out), nil
	}
	run := func(i int, dir string) string {
		t.Helper()
		out, err := try(i, dir)
		check.NoError(t, err)
		return out
	}
	// runUntil runs a block again until its output holds want (or, with
	// absent, until it no longer does).
	runUntil := func(i int, want string, absent bool) {
		t.Helper()
		check.For(t, 60*time.Second, 250*time.Millisecond, func() error {
			out, err := try(i, prod)
			if err != nil {
				return err
			}
			if strings.Contains(out, want) == absent {
				return fmt.Errorf("step block %d: want %q (absent: %v) in:\n%s", i, want, absent, out)
			}
			return nil
		})
	}
	// start runs a long-lived block in its own process group until its log
	// says ready, and returns the ready line and the function that stops
	// the block by its id (also at the end of the test). Should the block end
	// first because a port it reuses was taken meanwhile ("address already
	// in use"), it runs it again for a while.
	start := func(i int, log, ready string) (string, func()) {
		t.Helper()
		path := filepath.Join(work, log)
		for attempt := 1; ; attempt++ {
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			check.NoError(t, err)
			fi, err := f.Stat()
			check.NoError(t, err)
			from := fi.Size() // this run's part of the log
			cmd := exec.Command("bash", "-e", "-c", subst(blocks[i][1]))
			cmd.Dir, cmd.Stdout, cmd.Stderr = prod, f, f
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			check.NoError(t, cmd.Start())
			done := make(chan struct{})
			go func() { cmd.Wait(); f.Close(); close(done) }()
			var once sync.Once
			stop := func() {
				once.Do(func() {
					syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
					<-done
				})
			}
			t.Cleanup(stop)
			var line, out string
			ended := false
			check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
				select {
				case <-done:
					ended = true
				default:
				}
				b, _ := os.ReadFile(path)
				out = string(b[min(from, int64(len(b))):])
				lines := strings.Split(out, "\n")
				for _, l := range lines[:len(lines)-1] { // whole lines only
					if strings.Contains(l, ready) {
						line = l
						return nil
					}
				}
				if ended {
					return nil
				}
				return fmt.Errorf("%s: no %q yet:\n%s", log, ready, out)
			})
			if line != "" {
				return line, stop
			}
			if attempt == 20 || !strings.Contains(out, "address already in use") {
				t.Fatalf("step block %d ended before %q:\n%s", i, ready, out)
			}
			t.Logf("step block %d: a port is taken, running it again (attempt %d)", i, attempt)
			time.Sleep(250 * time.Millisecond)
		}
	}
	// waitLog waits until the log holds want at least n times.
	waitLog := func(name, want string, n int) {
		t.Helper()
		check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
			b, _ := os.ReadFile(filepath.Join(work, name))
			if strings.Count(string(b), want) < n {
				return fmt.Errorf("%s: %q not %d times yet:\n%s", name, want, n, b)
			}
			return nil
		})
	}

	run(tlsStep, work)
	run(initStep, prod)
	line, stopHub := start(hubStep, "hub.log", "hub ready")
	bound(line, "clients", "4222")
	bound(line, "leafnodes", "7422")
	run(siteAddStep, prod)
	line, _ = start(siteStep, "site.log", "leaf ready")
	bound(line, "clients", "4223")
	t.Logf("bound ports for the documented 4222, 7422, 4223: %s, %s, %s", ports["4222"], ports["7422"], ports["4223"])
	waitLog("site.log", "uplink synced", 1)
	out := run(publishStep, prod)
	for _, want := range []string{"signed and put as revision 1", "greeting=hi"} {
		if !strings.Contains(out, want) {
			t.Fatalf("publishing step: no %q in:\n%s", want, out)
		}
	}
	// An unsigned value is refused and the file stays.
	hubURL := "tls://127.0.0.1:" + ports["4222"]
	// natsAdmin runs the nats CLI at the hub as the tenant admin.
	natsAdmin := func(args ...string) (string, error) {
		cmd := exec.Command("nats", append([]string{"--server", hubURL, "--creds", "operator/creds/acme-admin.creds",
			"--tlsca", "tls/ca.pem", "--js-domain", "hub"}, args...)...)
		cmd.Dir = prod
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	// The block's status read runs once, as soon as the file is there: the
	// status may still be on its way to the hub. It must get there.
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		st, err := natsAdmin("kv", "get", "status", "s1.n1", "--raw")
		if err != nil || !strings.Contains(st, `"phase":"Converged"`) {
			return fmt.Errorf("status of s1.n1 at the hub: %s %v", st, err)
		}
		return nil
	})
	if out, err := natsAdmin("kv", "put", "blueprints", "s1.n1", "not signed"); err != nil {
		t.Fatalf("nats kv put: %v\n%s", err, out)
	}
	waitLog("site.log", "not a signed blueprint", 1)
	b, err := os.ReadFile(filepath.Join(prod, "site/root/etc/hello.conf"))
	check.NoError(t, err)
	check.Equal(t, string(b), "greeting=hi\n")

	// A hold at the site, with the hub gone.
	stopHub()
	waitLog("site.log", "uplink lost", 1)
	run(holdStep, prod)
	runUntil(heldStep, `"phase":"Held"`, false)
	run(releaseStep, prod)
	runUntil(heldStep, `"hold":`, true)
	start(hubStep, "hub.log", "hub ready") // on the ports it bound first

	// A container whose image only the artifact has.
	pm.Busybox(t, "localhost/ticker:1")
	pm.Podman(t, "save", "-o", filepath.Join(prod, "ticker.tar"), "localhost/ticker:1")
	pm.Podman(t, "rmi", "localhost/ticker:1")
	run(artifactStep, prod)
	check.For(t, 60*time.Second, 250*time.Millisecond, func() error {
		out, err := pm.TryPodman("ps", "--filter", "label=alpha.name=ticker", "--format", "{{.State}}")
		if err != nil || !strings.HasPrefix(out, "Up") { // podman 4.3 says "Up 2 seconds ago"
			return fmt.Errorf("container ticker: %q %v", out, err)
		}
		return nil
	})
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		out, err := natsAdmin("kv", "get", "status", "s1.n1", "--raw")
		if err != nil || !strings.Contains(out, `"id":"container:ticker","state":"running"`) {
			return fmt.Errorf("hub status: %v %s", err, out)
		}
		return nil
	})

	// A cloud resource the hub provisions; its signed output in a file.
	run(cloudStep, prod)
	runUntil(cloudFileStep, "bucket=alpha-logs-s1", false)

	// The site's telemetry, read at the hub by the tenant admin.
	out = run(telemetryStep, prod)
	if !strings.Contains(out, "telemetry.s1.n1.host.") {
		t.Fatalf("telemetry step: no host metrics of s1.n1 in:\n%s", out)
	}

	// A fleet of the labelled node, rolled out and converged.
	out = run(labelStep, prod)
	if !strings.Contains(out, "role=meter,zone=north") || !strings.Contains(out, "s1.n1") {
		t.Fatalf("label step:\n%s", out)
	}
	out = run(fleetApplyStep, prod)
	if !strings.Contains(out, "1 node(s) signed and staged") || !strings.Contains(out, "rollout of meters started") {
		t.Fatalf("fleet apply step:\n%s", out)
	}
	runUntil(rolloutStatusStep, "Completed", false)
	out = run(rolloutStatusStep, prod)
	for _, want := range []string{"1 good", "zone=north", "bucket=plant-s1-readings", "address=10.20.0.11"} {
		if !strings.Contains(out, want) {
			t.Fatalf("rollout status step lacks %q:\n%s", want, out)
		}
	}

	// An air-gapped site: no --hub, a stick both ways.
	run(gapAddStep, prod)
	out = run(gapExportStep, prod)
	line, _ = start(gapSiteStep, "site2.log", "leaf ready")
	bound(line, "clients", "4224")
	runUntil(gapImportStep, "greeting=hi", false)
	out = run(gapUplinkStep, prod)
	if !strings.Contains(out, "s2") || !strings.Contains(out, "n1") {
		t.Fatalf("air-gapped site's status at the hub after the uplink bundle:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(work, "site2.log")); strings.Contains(string(b), "nats-leaf") {
		t.Fatalf("the air-gapped site dialled a hub:\n%s", b)
	}

	// Revoke: cut off at once and refused from then on.
	out = run(revokeStep, prod)
	if !strings.Contains(out, "cut off") {
		t.Fatalf("revoke: %s", out)
	}
	waitLog("site.log", "Authorization Violation", 1)
}
