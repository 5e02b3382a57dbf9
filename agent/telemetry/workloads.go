package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	godbus "github.com/godbus/dbus/v5"

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

// UnitUsage reads each of the applied blueprint's units' CPU and memory
// from systemd's cgroup accounting (CPUUsageNSec, MemoryCurrent) and
// NRestarts, over D-Bus. Where systemd cannot account (a container on a
// cgroup v1 host, whose controllers are not delegated to it) it sums the
// unit's processes as systemd lists them (GetUnitProcesses), read from
// Root's /proc.
type UnitUsage struct {
	Bus       func(ctx context.Context) (*godbus.Conn, error)
	Root      string // the file system systemd sees ("/" in production)
	Blueprint func() *blueprint.Blueprint

	mu   sync.Mutex
	conn *godbus.Conn
}

// Name is the layer.
func (*UnitUsage) Name() string { return "units" }

// Collect reads every running service of the blueprint.
func (u *UnitUsage) Collect(ctx context.Context) ([]streams.Metric, error) {
	bp := u.Blueprint()
	if bp == nil || len(bp.Spec.Units) == 0 {
		return nil, nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.conn == nil || !u.conn.Connected() {
		c, err := u.Bus(ctx)
		if err != nil {
			return nil, fmt.Errorf("systemd: %w", err)
		}
		u.conn = c
	}
	var out []streams.Metric
	var errs []error
	for _, w := range bp.Spec.Units {
		if !strings.HasSuffix(w.Name, ".service") {
			continue // timers, sockets and mounts run nothing of their own
		}
		m, err := u.unit(ctx, w.Name)
		if err != nil {
			errs = append(errs, fmt.Errorf("unit %q: %w", w.Name, err))
			continue
		}
		out = append(out, m...)
	}
	return out, errors.Join(errs...)
}

const (
	sdDest    = "org.freedesktop.systemd1"
	sdService = "org.freedesktop.systemd1.Service"
)

func (u *UnitUsage) unit(ctx context.Context, name string) ([]streams.Metric, error) {
	mgr := u.conn.Object(sdDest, "/org/freedesktop/systemd1")
	var path godbus.ObjectPath
	if err := mgr.CallWithContext(ctx, "org.freedesktop.systemd1.Manager.GetUnit", 0, name).Store(&path); err != nil {
		return nil, nil // not loaded: nothing runs
	}
	obj := u.conn.Object(sdDest, path)
	prop := func(name string) uint64 {
		v, err := obj.GetProperty(sdService + "." + name)
		if err != nil {
			return math.MaxUint64
		}
		switch n := v.Value().(type) {
		case uint64:
			return n
		case uint32:
			return uint64(n)
		}
		return math.MaxUint64
	}
	if prop("MainPID") == 0 && prop("ExecMainStartTimestamp") == 0 {
		return nil, nil // never started
	}
	cpu, mem, restarts := prop("CPUUsageNSec"), prop("MemoryCurrent"), prop("NRestarts")
	if restarts == math.MaxUint64 {
		restarts = 0
	}
	if cpu == math.MaxUint64 || mem == math.MaxUint64 {
		var procs []struct {
			Cgroup string
			PID    uint32
			Cmd    string
		}
		if err := mgr.CallWithContext(ctx, "org.freedesktop.systemd1.Manager.GetUnitProcesses", 0, name).Store(&procs); err != nil {
			return nil, fmt.Errorf("no accounting and no process list: %w", err)
		}
		var pc, pm uint64
		for _, p := range procs {
			c, m := procUsage(u.Root, p.PID)
			pc, pm = pc+c, pm+m
		}
		if cpu == math.MaxUint64 {
			cpu = pc
		}
		if mem == math.MaxUint64 {
			mem = pm
		}
	}
	return usage(blueprint.ResourceID("unit", name), cpu, mem, float64(restarts)), nil
}

// clockTick is the kernel's USER_HZ, 100 on every Linux architecture Go
// supports.
const clockTick = 100

// procUsage reads a process's CPU time (ns) and resident memory (bytes)
// from root's /proc; zero for a process that is gone.
func procUsage(root string, pid uint32) (cpuNanos, rss uint64) {
	dir := filepath.Join(root, "proc", strconv.FormatUint(uint64(pid), 10))
	if b, err := os.ReadFile(filepath.Join(dir, "stat")); err == nil {
		// Fields after the command's closing parenthesis: utime and stime
		// are the 12th and 13th.
		if i := strings.LastIndexByte(string(b), ')'); i > 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 12 {
				ut, _ := strconv.ParseUint(f[11], 10, 64)
				st, _ := strconv.ParseUint(f[12], 10, 64)
				cpuNanos = (ut + st) * uint64(time.Second/clockTick)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "status")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				rss = kb << 10
			}
		}
	}
	return cpuNanos, rss
}
