package containers_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
)

func doc(body string) string {
	return "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: test}\nspec:\n" + body
}

func ctr(name, image string) string {
	return fmt.Sprintf("    - name: %s\n      image: %s\n      command: [/bin/sleep, \"100000\"]\n", name, image)
}

// running returns the id of a running container, or an error.
func running(pm *podmantest.Service, name string) (string, error) {
	out, err := pm.TryPodman("inspect", "--format", "{{.Id}} {{.State.Status}}", name)
	if err != nil {
		return "", err
	}
	f := strings.Fields(out)
	if len(f) != 2 || f[1] != "running" {
		return "", fmt.Errorf("%s is %q", name, out)
	}
	return f[0], nil
}

func waitRunning(t *testing.T, pm *podmantest.Service, name string, within time.Duration) string {
	t.Helper()
	var id string
	check.For(t, within, 20*time.Millisecond, func() error {
		var err error
		id, err = running(pm, name)
		return err
	})
	return id
}

func setup(t *testing.T) (*podmantest.Service, *containers.Driver, *enginetest.Agent) {
	pm := podmantest.Start(t)
	pm.Busybox(t, "localhost/busybox:1")
	pm.Busybox(t, "localhost/busybox:2")
	state := t.TempDir()
	d := containers.New(containers.Config{URI: pm.URI, Env: driver.Env{Root: t.TempDir(), StateDir: filepath.Join(state, "containers")}})
	return pm, d, enginetest.Start(t, state, d)
}

func TestReplaceOnlyChangedAndRemove(t *testing.T) {
	pm, _, a := setup(t)
	// A container the agent does not own must survive everything below.
	pm.Podman(t, "run", "-d", "--name", "bystander", "--init", "localhost/busybox:1", "sleep", "100000")

	rev := a.Offer(doc("  containers:\n" + ctr("a", "localhost/busybox:1") + ctr("b", "localhost/busybox:1")))
	a.WaitConverged(t, rev, 30*time.Second)
	idA := waitRunning(t, pm, "a", time.Second)
	idB := waitRunning(t, pm, "b", time.Second)
	labels := pm.Podman(t, "inspect", "--format", "{{index .Config.Labels \"alpha.managed\"}} {{index .Config.Labels \"alpha.spec-hash\"}}", "a")
	if !strings.HasPrefix(labels, "true ") || len(labels) != len("true ")+64 {
		t.Fatalf("labels of a: %q", labels)
	}
	if r, _ := a.Resource("container:a"); r.State != "running" {
		t.Fatalf("container:a reported %+v", r)
	}

	rev = a.Offer(doc("  containers:\n" + ctr("a", "localhost/busybox:1") + ctr("b", "localhost/busybox:2")))
	a.WaitConverged(t, rev, 30*time.Second)
	check.Equal(t, waitRunning(t, pm, "a", time.Second), idA)
	newB := waitRunning(t, pm, "b", time.Second)
	if newB == idB {
		t.Fatal("b was not replaced after its image changed")
	}
	check.Equal(t, pm.Podman(t, "inspect", "--format", "{{.ImageName}}", "b"), "localhost/busybox:2")

	rev = a.Offer(doc("  containers:\n" + ctr("a", "localhost/busybox:1")))
	a.WaitConverged(t, rev, 30*time.Second)
	// Not "podman inspect b": with no container named b it matches any
	// container whose id starts with b.
	if out := pm.Podman(t, "ps", "-a", "--filter", "name=^b$", "--format", "{{.Names}}"); out != "" {
		t.Fatalf("b is still there after it left the blueprint: %q", out)
	}
	check.Equal(t, waitRunning(t, pm, "a", time.Second), idA)
	waitRunning(t, pm, "bystander", time.Second)
}

func TestDriftRepairedFromEvents(t *testing.T) {
	pm, _, a := setup(t)
	rev := a.Offer(doc("  containers:\n" + ctr("web", "localhost/busybox:1")))
	a.WaitConverged(t, rev, 30*time.Second)
	waitRunning(t, pm, "web", time.Second)

	for _, how := range [][]string{{"rm", "-f", "-t", "0", "web"}, {"stop", "-t", "0", "web"}} {
		t.Run(how[0], func(t *testing.T) {
			before := pm.Podman(t, "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "web")
			r0, _ := a.Resource("container:web")
			// The repair can be so quick that the CLI's own cleanup after
			// stop finds the container running again and complains.
			if out, err := pm.TryPodman(how...); err != nil && !strings.Contains(out, "refusing to clean up") {
				t.Fatal(err)
			}
			// The engine resyncs hourly here: only podman's events can bring
			// it back within the minute. (How fast is BenchmarkDriftRepair's;
			// 2 s here was tight for two podman CLI runs a poll on a busy
			// machine.)
			check.For(t, 20*time.Second, 10*time.Millisecond, func() error {
				if _, err := running(pm, "web"); err != nil {
					return err
				}
				if now, _ := pm.TryPodman("inspect", "--format", "{{.Id}} {{.State.StartedAt}}", "web"); now == before {
					return fmt.Errorf("web was not restarted (%s)", now)
				}
				if r, _ := a.Resource("container:web"); r.Repairs <= r0.Repairs {
					return fmt.Errorf("repairs %d, want more than %d", r.Repairs, r0.Repairs)
				}
				return nil
			})
		})
	}
}

func TestBadInputIsReportedPerContainer(t *testing.T) {
	pm, _, a := setup(t)
	a.Offer(doc("  containers:\n" + ctr("good", "localhost/busybox:1") +
		ctr("noimage", "localhost/does-not-exist:1") +
		ctr("nodevice", "localhost/busybox:1") + "      devices: [/dev/alpha-no-such-device]\n"))
	waitRunning(t, pm, "good", 30*time.Second)
	a.WaitError(t, 30*time.Second, "container:noimage", `image "localhost/does-not-exist:1"`)
	a.WaitError(t, 30*time.Second, "container:nodevice", `devices[0] "/dev/alpha-no-such-device" does not exist`)
	for _, id := range []string{"container:noimage", "container:nodevice"} {
		if r, _ := a.Resource(id); r.State != "failed" || r.Message == "" {
			t.Fatalf("%s reported %+v", id, r)
		}
	}
	if r, _ := a.Resource("container:good"); r.State != "running" {
		t.Fatalf("container:good reported %+v", r)
	}
}

func TestSpecHashIgnoresDependsOn(t *testing.T) {
	c := blueprint.Container{Name: "x", Image: "i"}
	h := containers.SpecHash(c)
	c.DependsOn = []string{"file:/etc/x"}
	check.Equal(t, containers.SpecHash(c), h)
	c.Env = map[string]string{"A": "1"}
	if containers.SpecHash(c) == h {
		t.Fatal("env change kept the hash")
	}
}

func TestSpecFieldsReachPodman(t *testing.T) {
	pm, d, a := setup(t)
	a.Offer(doc(`  containers:
    - name: full
      image: localhost/busybox:1
      command: [/bin/sh, -c]
      args: ["echo $GREETING > /out/hello; exec sleep 100000"]
      env: {GREETING: hi}
      network: host
      restart: on-failure
      cpus: 0.5
      memory: 64Mi
      labels: {team: edge}
      devices: [/dev/null]
      mounts:
        - {source: /data, target: /out}
`))
	// The mount source lives under the agent's root; create it first.
	a.WaitError(t, 30*time.Second, "container:full", `mounts[0].source "/data"`)
	check.NoError(t, os.MkdirAll(filepath.Join(d.Root(), "data"), 0o755))
	a.Engine.Trigger("test")
	waitRunning(t, pm, "full", 30*time.Second)
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		b, err := os.ReadFile(filepath.Join(d.Root(), "data/hello"))
		if err != nil || string(b) != "hi\n" {
			return fmt.Errorf("hello: %q %v", b, err)
		}
		return nil
	})
	got := pm.Podman(t, "inspect", "--format",
		"{{.HostConfig.Memory}} {{.HostConfig.CpuQuota}} {{.HostConfig.NetworkMode}} {{.HostConfig.RestartPolicy.Name}} {{index .Config.Labels \"team\"}} {{len .HostConfig.Devices}}", "full")
	check.Equal(t, got, "67108864 50000 host on-failure edge 1")
}

func TestHealthChecksRunAndAreReported(t *testing.T) {
	_, _, a := setup(t)
	a.Offer(doc("  containers:\n" +
		ctr("fine", "localhost/busybox:1") + "      healthCheck: {command: [/bin/true], interval: 1s}\n" +
		ctr("sick", "localhost/busybox:1") + "      healthCheck: {command: [/bin/false], interval: 1s, retries: 1}\n"))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		fine, _ := a.Resource("container:fine")
		sick, _ := a.Resource("container:sick")
		if fine.State != "running" || fine.Health != 1 {
			return fmt.Errorf("container:fine reported %+v", fine)
		}
		if sick.State != "running" || sick.Health >= 1 || !strings.Contains(sick.Message, "unhealthy") {
			return fmt.Errorf("container:sick reported %+v", sick)
		}
		return nil
	})
}

func TestDriftRepairedAfterPodmanRestart(t *testing.T) {
	pm, _, a := setup(t)
	rev := a.Offer(doc("  containers:\n" + ctr("web", "localhost/busybox:1")))
	a.WaitConverged(t, rev, 30*time.Second)
	waitRunning(t, pm, "web", time.Second)
	pm.Restart(t)
	id := waitRunning(t, pm, "web", time.Second) // conmon kept it running
	pm.Podman(t, "rm", "-f", "-t", "0", "web")
	// Whether the watcher has reconnected yet or does so now (a reconnect
	// asks for a pass), the removal is repaired long before the hourly
	// resync.
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		now, err := running(pm, "web")
		if err == nil && now == id {
			return fmt.Errorf("web not replaced yet")
		}
		return err
	})
}
