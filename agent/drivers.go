package agent

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/agent/compliance"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/firewall"
	"github.com/alpha-edge/alpha/agent/kmod"
	"github.com/alpha-edge/alpha/agent/maintenance"
	"github.com/alpha-edge/alpha/agent/network"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/agent/sysctl"
	"github.com/alpha-edge/alpha/blueprint"
)

// wiring is what buildDrivers hands back besides the drivers.
type wiring struct {
	prepare    func(ctx context.Context, bp *blueprint.Blueprint) (*blueprint.Blueprint, error)
	cloud      *cloudSource
	gate       *maintenance.Gate
	holds      *lazyHolds
	compliance *compliance.Driver
}

// buildDrivers is the one place that decides which drivers a node runs and
// in what order they plan (the engine then orders changes by dependsOn).
// Every driver is wrapped so per-resource holds keep it off held resources.
func buildDrivers(cfg Config, log *slog.Logger) ([]driver.Driver, *wiring, error) {
	w := &wiring{holds: &lazyHolds{}}
	w.gate = &maintenance.Gate{Holds: w.holds}
	env := func(name string) driver.Env {
		return driver.Env{Root: cfg.Root, StateDir: filepath.Join(cfg.StateDir, name), Log: log.With("driver", name)}
	}
	var ds []driver.Driver
	// Cloud outputs resolve before any driver plans; the resolver is also a
	// driver so its report and watch are used.
	var err error
	if w.cloud, err = newCloudSource(filepath.Join(cfg.StateDir, "cloud")); err != nil {
		return nil, nil, err
	}
	cr := cloudref.New(w.cloud, log.With("driver", "cloud"))
	w.prepare = cr.Prepare
	ds = append(ds, cr)

	fd, err := files.New(env("files"))
	if err != nil {
		return nil, nil, err
	}
	ds = append(ds, fd)

	run := oscmd.Runner{}
	// Kernel modules and sysctl persist under the root, so they stay on the
	// node's files; but their values, the firewall and links are the
	// kernel's: the dev stack leaves those alone (see Config.NoHostKernel).
	w.compliance = compliance.New(env("compliance"))
	ds = append(ds, w.compliance)
	if !cfg.NoHostKernel {
		sc, err := sysctl.New(env("sysctl"), run)
		if err != nil {
			return nil, nil, err
		}
		fw, err := firewall.New(env("firewall"), run)
		if err != nil {
			return nil, nil, err
		}
		ds = append(ds, sc, kmod.New(env("kmod"), run), fw, network.New(env("network"), run))
	}
	for i := range ds {
		ds[i] = maintenance.Filter(ds[i], w.gate, time.Now)
	}
	return ds, w, nil
}

// lazyHolds is the gate's view of the node's hold: empty until the agent
// reaches the site's holds bucket, then whatever its watcher last saw.
type lazyHolds struct {
	mu    sync.Mutex
	inner *maintenance.Holds
}

func (l *lazyHolds) set(h *maintenance.Holds) {
	l.mu.Lock()
	l.inner = h
	l.mu.Unlock()
}

// Current returns the node's hold, if any.
func (l *lazyHolds) Current() (maintenance.Hold, bool) {
	l.mu.Lock()
	h := l.inner
	l.mu.Unlock()
	if h == nil {
		return maintenance.Hold{}, false
	}
	return h.Current()
}
