package units_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
)

// BenchmarkBlueprintToServiceActive measures the time from a blueprint
// offered to the engine until the agent reports the new service running
// (each revision swaps in a unit of a new name).
func BenchmarkBlueprintToServiceActive(b *testing.B) {
	m := nspawntest.Boot(b)
	state := b.TempDir()
	d, err := units.New(units.Config{Env: driver.Env{Root: m.Root, StateDir: filepath.Join(state, "units")},
		Bus: units.DialBus(m.BusAddress)})
	check.NoError(b, err)
	a := enginetest.Start(b, state, d)
	const samples = 20
	var lat enginetest.Latencies
	b.ResetTimer()
	for i := 0; i < b.N*samples; i++ {
		name := fmt.Sprintf("bench-%d.service", i)
		start := time.Now()
		a.Offer(doc(fmt.Sprintf("  units:\n    - name: %s\n      content: |\n        [Service]\n        ExecStart=/bin/sleep 100000\n        [Install]\n        WantedBy=multi-user.target\n", name)))
		check.For(b, 30*time.Second, 2*time.Millisecond, func() error {
			if r, _ := a.Resource("unit:" + name); r.State != "running" {
				return fmt.Errorf("%s: %+v", name, r)
			}
			return nil
		})
		lat = append(lat, time.Since(start))
	}
	lat.Report(b, "to-active")
}

// BenchmarkDriftRepair measures the time from `systemctl stop` by hand until
// the service is active again.
func BenchmarkDriftRepair(b *testing.B) {
	m := nspawntest.Boot(b)
	state := b.TempDir()
	// Stops back to back meet the restart backoff, which is not what this
	// measures.
	d, err := units.New(units.Config{Env: driver.Env{Root: m.Root, StateDir: filepath.Join(state, "units")},
		Bus: units.DialBus(m.BusAddress), RestartBackoff: time.Nanosecond})
	check.NoError(b, err)
	a := enginetest.Start(b, state, d)
	rev := a.Offer(doc("  units:\n    - name: web.service\n      content: |\n        [Service]\n        ExecStart=/bin/sleep 100000\n"))
	a.WaitConverged(b, rev, 30*time.Second)
	const samples = 10
	var lat enginetest.Latencies
	b.ResetTimer()
	for i := 0; i < b.N*samples; i++ {
		// Space the stops as incidents by hand are: back to back they would
		// drain the watcher's event bucket and measure its pacing instead.
		time.Sleep(time.Second)
		start := time.Now()
		if out, err := m.Systemctl("stop", "web.service"); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
		check.For(b, 10*time.Second, 2*time.Millisecond, func() error {
			if out, _ := m.Systemctl("is-active", "web.service"); out != "active" {
				return fmt.Errorf("web.service is %s", out)
			}
			return nil
		})
		lat = append(lat, time.Since(start))
	}
	lat.Report(b, "repair")
}
