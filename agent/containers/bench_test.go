package containers_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
)

// BenchmarkBlueprintToContainerRunning measures the time from a blueprint
// offered to the engine until the agent reports the new container running
// (each revision swaps in a container of a new name).
func BenchmarkBlueprintToContainerRunning(b *testing.B) {
	pm := podmantest.Start(b)
	pm.Busybox(b, "localhost/busybox:1")
	state := b.TempDir()
	d := containers.New(containers.Config{URI: pm.URI, Env: driver.Env{Root: b.TempDir(), StateDir: filepath.Join(state, "containers")}})
	a := enginetest.Start(b, state, d)
	const samples = 20
	var lat enginetest.Latencies
	b.ResetTimer()
	for i := 0; i < b.N*samples; i++ {
		name := fmt.Sprintf("bench-%d", i)
		start := time.Now()
		a.Offer(doc("  containers:\n" + ctr(name, "localhost/busybox:1")))
		check.For(b, 30*time.Second, 2*time.Millisecond, func() error {
			if r, _ := a.Resource("container:" + name); r.State != "running" {
				return fmt.Errorf("%s: %+v", name, r)
			}
			return nil
		})
		lat = append(lat, time.Since(start))
	}
	lat.Report(b, "to-running")
}

// BenchmarkDriftRepair measures the time from `podman rm -f` by hand until
// the container runs again.
func BenchmarkDriftRepair(b *testing.B) {
	pm := podmantest.Start(b)
	pm.Busybox(b, "localhost/busybox:1")
	state := b.TempDir()
	d := containers.New(containers.Config{URI: pm.URI, Env: driver.Env{Root: b.TempDir(), StateDir: filepath.Join(state, "containers")}})
	a := enginetest.Start(b, state, d)
	rev := a.Offer(doc("  containers:\n" + ctr("web", "localhost/busybox:1")))
	a.WaitConverged(b, rev, 30*time.Second)
	const samples = 10
	var lat enginetest.Latencies
	b.ResetTimer()
	for i := 0; i < b.N*samples; i++ {
		before, err := running(pm, "web")
		check.NoError(b, err)
		start := time.Now()
		pm.Podman(b, "rm", "-f", "-t", "0", "web")
		check.For(b, 10*time.Second, 2*time.Millisecond, func() error {
			id, err := running(pm, "web")
			if err == nil && id == before {
				return fmt.Errorf("not replaced yet")
			}
			return err
		})
		lat = append(lat, time.Since(start))
	}
	lat.Report(b, "repair")
}
