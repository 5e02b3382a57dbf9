package telemetry_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
	"github.com/alpha-edge/alpha/streams"
)

// hog waits for the file go, then holds about 64 MB in a shell variable.
const hog = `while [ ! -e %[1]s ]; do sleep 0.1; done; x=$(%[2]shead -c 64000000 /dev/zero | %[2]str '\0' a); echo allocated; sleep 100000`

// usageOf is the sample of signal for id in ms.
func usageOf(ms []streams.Metric, signal, id string) (float64, bool) {
	for _, m := range ms {
		if m.Name == signal && m.Labels["id"] == id {
			return m.Value, true
		}
	}
	return 0, false
}

// risesWhenAllocating samples c until its memory series for id is there,
// lets the workload allocate, and waits for the series to rise by 40 MB;
// CPU and restarts come with it.
func risesWhenAllocating(t *testing.T, c telemetry.Collector, id string, allocate func()) {
	t.Helper()
	ctx := context.Background()
	var before float64
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		ms, err := telemetry.Collect(ctx, c)
		if err != nil {
			return err
		}
		v, ok := usageOf(ms, telemetry.SignalMemory, id)
		if !ok || v == 0 {
			return fmt.Errorf("no memory sample of %s yet: %v", id, ms)
		}
		if _, ok := usageOf(ms, telemetry.SignalRestarts, id); !ok {
			return fmt.Errorf("no restarts sample of %s: %v", id, ms)
		}
		if _, ok := usageOf(ms, telemetry.SignalCPU, id); !ok {
			return fmt.Errorf("no cpu sample of %s: %v", id, ms)
		}
		before = v
		return nil
	})
	allocate()
	var after float64
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		ms, err := telemetry.Collect(ctx, c)
		if err != nil {
			return err
		}
		after, _ = usageOf(ms, telemetry.SignalMemory, id)
		if after-before < 40e6 {
			return fmt.Errorf("%s memory %.0f B, was %.0f B before allocating", id, after, before)
		}
		return nil
	})
	t.Logf("%s memory %.1f MB -> %.1f MB", id, before/1e6, after/1e6)
}

// TestContainerMemoryRises reads a real container's usage through podman's
// stats API while it allocates.
func TestContainerMemoryRises(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Busybox(t, "localhost/busybox:test")
	dir := t.TempDir()
	pm.Podman(t, "run", "-d", "--name", "hog", "--network", "none", "-v", dir+":/t", "localhost/busybox:test",
		"sh", "-c", fmt.Sprintf(hog, "/t/go", "busybox "))
	bp := &blueprint.Blueprint{Spec: blueprint.Spec{Containers: []blueprint.Container{{Name: "hog"}}}}
	c := &telemetry.ContainerUsage{URI: pm.URI, Blueprint: func() *blueprint.Blueprint { return bp }}
	risesWhenAllocating(t, c, "container:hog", func() {
		check.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o644))
	})
}

// TestUnitMemoryRises reads a real systemd's cgroup accounting of a unit
// over D-Bus while the unit allocates.
func TestUnitMemoryRises(t *testing.T) {
	m := nspawntest.Boot(t)
	unit := fmt.Sprintf("[Service]\nExecStart=/bin/sh -c \"%s\"\n", fmt.Sprintf(hog, "/run/go", ""))
	check.NoError(t, os.WriteFile(filepath.Join(m.Root, "etc/systemd/system/hog.service"), []byte(unit), 0o644))
	for _, args := range [][]string{{"daemon-reload"}, {"start", "hog.service"}} {
		if out, err := m.Systemctl(args...); err != nil {
			t.Fatalf("systemctl %v: %v: %s", args, err, out)
		}
	}
	bp := &blueprint.Blueprint{Spec: blueprint.Spec{Units: []blueprint.Unit{{Name: "hog.service"}}}}
	c := &telemetry.UnitUsage{
		Bus:       units.DialBus(m.BusAddress),
		Root:      m.Root,
		Blueprint: func() *blueprint.Blueprint { return bp },
	}
	risesWhenAllocating(t, c, "unit:hog.service", func() {
		check.NoError(t, os.WriteFile(filepath.Join(m.Root, "run/go"), nil, 0o644))
	})
}
