package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	sd "github.com/coreos/go-systemd/v22/dbus"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Usage of a workload, one form for containers and units: workload.cpu
// (seconds of CPU used since it started), workload.memory (bytes in use
// now) and workload.restarts (by its runtime: podman's restart policy,
// systemd's Restart=), labelled id=container:web or id=unit:meter.service.
const (
	SignalCPU      = "workload.cpu"
	SignalMemory   = "workload.memory"
	SignalRestarts = "workload.restarts"
)

func usage(id string, cpuNanos, memBytes uint64, restarts float64) []streams.Metric {
	lab := func() map[string]string { return map[string]string{"id": id} }
	return []streams.Metric{
		{Name: SignalCPU, Value: float64(cpuNanos) / 1e9, Unit: "s", Labels: lab()},
		{Name: SignalMemory, Value: float64(memBytes), Unit: "B", Labels: lab()},
		{Name: SignalRestarts, Value: restarts, Labels: lab()},
	}
}

// ContainerUsage reads each of the applied blueprint's containers' CPU and
// memory from podman's stats API and its restart count from inspect.
type ContainerUsage struct {
	URI       string // podman's REST socket
	Blueprint func() *blueprint.Blueprint

	mu   sync.Mutex
	conn context.Context
}

// Name is the layer.
func (*ContainerUsage) Name() string { return "containers" }

// Collect reads the running containers; one that is not running reports
// no usage (resource.up says so).
func (c *ContainerUsage) Collect(ctx context.Context) ([]streams.Metric, error) {
	bp := c.Blueprint()
	if bp == nil || len(bp.Spec.Containers) == 0 {
		return nil, nil
	}
	cctx, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	var out []streams.Metric
	var errs []error
	for _, w := range bp.Spec.Containers {
		data, err := containers.Inspect(cctx, w.Name, nil)
		if err != nil || data.State == nil || !data.State.Running {
			continue
		}
		ch, err := containers.Stats(cctx, []string{data.ID}, new(containers.StatsOptions).WithStream(false))
		if err != nil {
			errs = append(errs, fmt.Errorf("container %q: stats: %w", w.Name, err))
			continue
		}
		for rep := range ch {
			if rep.Error != nil {
				errs = append(errs, fmt.Errorf("container %q: stats: %w", w.Name, rep.Error))
				continue
			}
			for _, st := range rep.Stats {
				out = append(out, usage(blueprint.ResourceID("container", w.Name), st.CPUNano, st.MemUsage, float64(data.RestartCount))...)
			}
		}
	}
	return out, errors.Join(errs...)
}

func (c *ContainerUsage) client(ctx context.Context) (context.Context, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn == nil {
		if path, ok := strings.CutPrefix(c.URI, "unix://"); ok {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("podman at %s: %w", c.URI, err)
			}
		}
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := bindings.NewConnection(pctx, c.URI)
		if err != nil {
			return nil, fmt.Errorf("podman at %s: %w", c.URI, err)
		}
		c.conn = conn
	}
	return podmanCtx{ctx, c.conn}, nil
}

// podmanCtx takes cancellation from the call and the client from the
// connection's context.
type podmanCtx struct {
	context.Context
	conn context.Context
}

func (p podmanCtx) Value(k any) any {
	if v := p.Context.Value(k); v != nil {
		return v
	}
	return p.conn.Value(k)
}

// UnitUsage reads each of the applied blueprint's units' cgroup accounting
// (CPUUsageNSec, MemoryCurrent) and NRestarts from systemd over D-Bus.
type UnitUsage struct {
	Dial      func(ctx context.Context) (*sd.Conn, error)
	Blueprint func() *blueprint.Blueprint

	mu   sync.Mutex
	conn *sd.Conn
}

// Name is the layer.
func (*UnitUsage) Name() string { return "units" }

// Collect reads every unit systemd accounts for; a unit without accounting
// (systemd reports the maximum value) reports no usage.
func (u *UnitUsage) Collect(ctx context.Context) ([]streams.Metric, error) {
	bp := u.Blueprint()
	if bp == nil || len(bp.Spec.Units) == 0 {
		return nil, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil || !u.conn.Connected() {
		c, err := u.Dial(ctx)
		if err != nil {
			return nil, fmt.Errorf("systemd: %w", err)
		}
		u.conn = c
	}
	var out []streams.Metric
	var errs []error
	for _, w := range bp.Spec.Units {
		if !strings.HasSuffix(w.Name, ".service") {
			continue // timers, sockets and mounts have no service cgroup
		}
		props, err := u.conn.GetUnitTypePropertiesContext(ctx, w.Name, "Service")
		if err != nil {
			errs = append(errs, fmt.Errorf("unit %q: %w", w.Name, err))
			continue
		}
		cpu, _ := props["CPUUsageNSec"].(uint64)
		mem, _ := props["MemoryCurrent"].(uint64)
		restarts, _ := props["NRestarts"].(uint32)
		if mem == math.MaxUint64 && cpu == math.MaxUint64 {
			continue // not running, or no accounting
		}
		if cpu == math.MaxUint64 {
			cpu = 0
		}
		if mem == math.MaxUint64 {
			mem = 0
		}
		out = append(out, usage(blueprint.ResourceID("unit", w.Name), cpu, mem, float64(restarts))...)
	}
	return out, errors.Join(errs...)
}
