package units_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
)

func doc(body string) string {
	return "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: test}\nspec:\n" + body
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// service is a unit whose ExecStart is an executable fetched from the hub.
func service(name, exeName string, exe []byte) string {
	return fmt.Sprintf(`    - name: %[1]s
      content: |
        [Unit]
        Description=alpha test %[1]s
        [Service]
        ExecStart=/usr/local/bin/%[2]s
        [Install]
        WantedBy=multi-user.target
      executable:
        path: /usr/local/bin/%[2]s
        mode: "0750"
        artifact: {name: %[2]s-%[3]s, sha256: %[3]s}
`, name, exeName, sha(exe))
}

func script(version string) []byte {
	return []byte("#!/bin/sh\n# version " + version + "\nexec sleep 100000\n")
}

type env struct {
	m     *nspawntest.Machine
	agent *enginetest.Agent
	hub   func(name string, content []byte)
}

func setup(t *testing.T) *env {
	m := nspawntest.Boot(t)
	_, nc := hubtest.Start(t)
	state := t.TempDir()
	cache, err := artifacts.NewCache(filepath.Join(state, "artifacts"), artifacts.NewObjectStore(nc, "", ""), nil)
	check.NoError(t, err)
	d, err := units.New(units.Config{Env: driver.Env{Root: m.Root, StateDir: filepath.Join(state, "units")},
		Bus: units.DialBus(m.BusAddress), Artifacts: cache})
	check.NoError(t, err)
	return &env{m: m, agent: enginetest.Start(t, state, d), hub: func(name string, content []byte) {
		hubtest.Put(t, nc, name+"-"+sha(content), content)
	}}
}

func (e *env) show(t *testing.T, unit, prop string) string {
	t.Helper()
	out, err := e.m.Systemctl("show", "-P", prop, unit)
	if err != nil {
		t.Fatalf("systemctl show %s: %v: %s", unit, err, out)
	}
	return out
}

func (e *env) waitProp(t *testing.T, unit, prop, want string, within time.Duration) {
	t.Helper()
	check.For(t, within, 20*time.Millisecond, func() error {
		if got := e.show(t, unit, prop); got != want {
			return fmt.Errorf("%s %s=%q, want %q", unit, prop, got, want)
		}
		return nil
	})
}

func TestInstallRestartOnBinaryChangeRemove(t *testing.T) {
	e := setup(t)
	v1, v2 := script("1"), script("2")
	e.hub("meter", v1)
	e.hub("meter", v2)
	rev := e.agent.Offer(doc("  units:\n" + service("meter.service", "meter", v1)))
	e.agent.WaitConverged(t, rev, 30*time.Second)
	e.waitProp(t, "meter.service", "ActiveState", "active", time.Second)
	check.Equal(t, e.show(t, "meter.service", "UnitFileState"), "enabled")
	exe := filepath.Join(e.m.Root, "usr/local/bin/meter")
	fi, err := os.Stat(exe)
	check.NoError(t, err)
	check.Equal(t, fi.Mode().Perm(), os.FileMode(0o750))
	pid1 := e.show(t, "meter.service", "MainPID")
	if r, _ := e.agent.Resource("unit:meter.service"); r.State != "running" {
		t.Fatalf("unit:meter.service reported %+v", r)
	}

	rev = e.agent.Offer(doc("  units:\n" + service("meter.service", "meter", v2)))
	e.agent.WaitConverged(t, rev, 30*time.Second)
	e.waitProp(t, "meter.service", "ActiveState", "active", time.Second)
	if pid2 := e.show(t, "meter.service", "MainPID"); pid2 == pid1 {
		t.Fatal("meter.service was not restarted after its executable changed")
	}
	got, err := os.ReadFile(exe)
	check.NoError(t, err)
	check.Equal(t, string(got), string(v2))

	rev = e.agent.Offer(doc("  files: []\n"))
	e.agent.WaitConverged(t, rev, 30*time.Second)
	check.Equal(t, e.show(t, "meter.service", "ActiveState"), "inactive")
	for _, p := range []string{"usr/local/bin/meter", "etc/systemd/system/meter.service",
		"etc/systemd/system/multi-user.target.wants/meter.service"} {
		if _, err := os.Lstat(filepath.Join(e.m.Root, p)); !os.IsNotExist(err) {
			t.Errorf("%s is still there after the unit left the blueprint", p)
		}
	}
}

func TestDriftRepairedFromEvents(t *testing.T) {
	e := setup(t)
	v1 := script("1")
	e.hub("meter", v1)
	rev := e.agent.Offer(doc("  units:\n" + service("meter.service", "meter", v1)))
	e.agent.WaitConverged(t, rev, 30*time.Second)
	e.waitProp(t, "meter.service", "ActiveState", "active", time.Second)

	for _, tc := range []struct{ cmd, prop, want string }{
		{"stop", "ActiveState", "active"},
		{"disable", "UnitFileState", "enabled"},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			r0, _ := e.agent.Resource("unit:meter.service")
			if out, err := e.m.Systemctl(tc.cmd, "meter.service"); err != nil {
				// Under load the agent can see "deactivating" and queue its
				// start before systemctl returns, which cancels the stop
				// job: the repair won the race, which is the point.
				if !strings.Contains(out, "canceled") {
					t.Fatalf("systemctl %s: %v: %s", tc.cmd, err, out)
				}
				t.Logf("systemctl %s: %s (the repair was already under way)", tc.cmd, out)
			}
			// The engine resyncs hourly here: only D-Bus signals can bring it
			// back within the minute (how fast: BenchmarkDriftRepair).
			e.waitProp(t, "meter.service", tc.prop, tc.want, 20*time.Second)
			check.For(t, 20*time.Second, 10*time.Millisecond, func() error {
				if r, _ := e.agent.Resource("unit:meter.service"); r.Repairs <= r0.Repairs {
					return fmt.Errorf("repairs %d, want more than %d", r.Repairs, r0.Repairs)
				}
				return nil
			})
		})
	}
}

func TestRejectedUnitFileIsReported(t *testing.T) {
	e := setup(t)
	good := script("good")
	e.hub("good", good)
	e.agent.Offer(doc("  units:\n" + service("good.service", "good", good) +
		"    - name: broken.service\n      content: |\n        [Service]\n        Type=simple\n" +
		"    - name: tmpl@.service\n      content: |\n        [Service]\n        ExecStart=/bin/sleep 100000\n"))
	msg := e.agent.WaitError(t, 30*time.Second, "unit:broken.service", "systemd refused the unit file", "bad-setting")
	if !strings.Contains(msg, "terminal") {
		t.Errorf("a rejected unit file should be a terminal error: %s", msg)
	}
	e.waitProp(t, "good.service", "ActiveState", "active", 10*time.Second)
	// A template cannot run without an instance: systemd says so, for that
	// unit alone.
	tmpl := e.agent.WaitError(t, 30*time.Second, "unit:tmpl@.service")
	t.Logf("template: %s", tmpl)
	if r, _ := e.agent.Resource("unit:broken.service"); r.State != "failed" {
		t.Fatalf("unit:broken.service reported %+v", r)
	}
}

func TestFailingServiceIsReportedAndPaced(t *testing.T) {
	e := setup(t)
	e.agent.Offer(doc("  units:\n    - name: crash.service\n      content: |\n        [Service]\n        ExecStart=/bin/sh -c 'exit 3'\n"))
	start := time.Now()
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		r, _ := e.agent.Resource("unit:crash.service")
		if r.State != "failed" || !strings.Contains(r.Message, "exit status 3") {
			return fmt.Errorf("unit:crash.service reported %+v", r)
		}
		return nil
	})
	// It is retried, but with growing pauses: let a few seconds of
	// retries happen.
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if r, _ := e.agent.Resource("unit:crash.service"); r.Repairs < 2 {
			return fmt.Errorf("repairs %d", r.Repairs)
		}
		return nil
	})
	r, _ := e.agent.Resource("unit:crash.service")
	elapsed := time.Since(start)
	t.Logf("after %v: %+v", elapsed, r)
	if limit := 2 + int(elapsed/time.Second); r.Repairs > uint64(limit) {
		t.Fatalf("the agent restarted a failing unit %d times in %v", r.Repairs, elapsed)
	}
}

func TestOneshotRunsOnce(t *testing.T) {
	e := setup(t)
	rev := e.agent.Offer(doc("  units:\n    - name: once.service\n      content: |\n        [Service]\n        Type=oneshot\n        ExecStart=/bin/sh -c 'echo ran >> /var/tmp/once.log'\n"))
	e.agent.WaitConverged(t, rev, 30*time.Second)
	// More passes (a resync, drift elsewhere) must not run it again.
	e.agent.MorePasses(t, 5)
	b, err := os.ReadFile(filepath.Join(e.m.Root, "var/tmp/once.log"))
	check.NoError(t, err)
	check.Equal(t, string(b), "ran\n")
	if r, _ := e.agent.Resource("unit:once.service"); r.State != "completed" {
		t.Fatalf("unit:once.service reported %+v", r)
	}
}
