package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/agent/compliance"
	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/firewall"
	"github.com/alpha-edge/alpha/agent/kmod"
	"github.com/alpha-edge/alpha/agent/maintenance"
	"github.com/alpha-edge/alpha/agent/network"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/agent/sysctl"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/blueprint"
)

// wiring is what buildDrivers hands back besides the drivers.
type wiring struct {
	prepare    func(ctx context.Context, bp *blueprint.Blueprint) (*blueprint.Blueprint, error)
	cloud      *cloudSource
	gate       *maintenance.Gate
	holds      *maintenance.Holds
	compliance *compliance.Driver
	artifacts  *lazyArtifacts
	actuator   *actuator
	reporters  []driver.Reporter
}

// buildDrivers is the one place that decides which drivers a node runs and
// in what order they plan (the engine then orders changes by dependsOn).
// Every driver is wrapped so per-resource holds keep it off held resources.
func buildDrivers(cfg Config, log *slog.Logger) ([]driver.Driver, *wiring, error) {
	w := &wiring{}
	// The hold state the node last saw, in force before anything
	// reconciles: the holds bucket may be gone, empty or out of reach now.
	var err error
	if w.holds, err = maintenance.Load(cfg.StateDir, cfg.Site, cfg.Node, log); err != nil {
		return nil, nil, err
	}
	w.gate = &maintenance.Gate{Holds: w.holds}
	env := func(name string) driver.Env {
		return driver.Env{Root: cfg.Root, StateDir: filepath.Join(cfg.StateDir, name), Log: log.With("driver", name)}
	}
	var ds []driver.Driver
	// Cloud outputs resolve before any driver plans; the resolver is also a
	// driver so its report and watch are used.
	if w.cloud, err = newCloudSource(filepath.Join(cfg.StateDir, "cloud"), cloudVerify(cfg)); err != nil {
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

	// Image archives and executables come from the hub's artifacts bucket
	// once the agent is connected, and from the node's cache always.
	w.artifacts = &lazyArtifacts{}
	cache, err := artifacts.NewCache(filepath.Join(cfg.StateDir, "artifacts"), w.artifacts, log.With("component", "artifacts"))
	if err != nil {
		return nil, nil, err
	}
	w.actuator = &actuator{stopped: map[string]time.Time{}}
	// A node without podman still converges while its blueprint names no
	// container.
	w.actuator.containers = containers.New(containers.Config{URI: cfg.PodmanURI, Env: env("containers"), Artifacts: cache})
	ds = append(ds, w.actuator.containers)
	if !cfg.Sandbox {
		ucfg := units.Config{Env: env("units"), Artifacts: cache}
		if cfg.SystemdBus != "" {
			ucfg.Bus = units.DialBus(cfg.SystemdBus)
		}
		if w.actuator.units, err = units.New(ucfg); err != nil {
			return nil, nil, err
		}
		ds = append(ds, w.actuator.units)
	}

	run := oscmd.Runner{}
	// The kernel's state (sysctl values, firewall, links, modules) and
	// systemd belong to the host: the dev stack leaves them alone (see
	// Config.Sandbox).
	w.compliance = compliance.New(env("compliance"))
	ds = append(ds, w.compliance)
	if !cfg.Sandbox {
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
		if r, ok := ds[i].(driver.Reporter); ok {
			w.reporters = append(w.reporters, r)
		}
		ds[i] = maintenance.Filter(w.actuator.filter(ds[i]), w.gate, time.Now)
	}
	return ds, w, nil
}

// lazyArtifacts reads the hub's artifacts bucket through the agent's
// connection once there is one; before that every fetch misses, and the
// node's cache serves what it has.
type lazyArtifacts struct {
	mu  sync.Mutex
	src artifacts.Source
}

func (l *lazyArtifacts) set(src artifacts.Source) {
	l.mu.Lock()
	l.src = src
	l.mu.Unlock()
}

// Open fetches an object from the hub.
func (l *lazyArtifacts) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	l.mu.Lock()
	src := l.src
	l.mu.Unlock()
	if src == nil {
		return nil, fmt.Errorf("artifact %q: not connected to the site yet", name)
	}
	return src.Open(ctx, name)
}
