package agent

import (
	"context"

	"log/slog"
	"path/filepath"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/blueprint"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
)

// wiring is what buildDrivers hands back besides the drivers.
type wiring struct {
	prepare func(ctx context.Context, bp *blueprint.Blueprint) (*blueprint.Blueprint, error)
	cloud   *cloudSource
}

// buildDrivers is the one place that decides which drivers a node runs and
// in what order they plan (the engine then orders changes by dependsOn).
func buildDrivers(cfg Config, log *slog.Logger) ([]driver.Driver, *wiring, error) {
	w := &wiring{}
	env := func(name string) driver.Env {
		return driver.Env{Root: cfg.Root, StateDir: filepath.Join(cfg.StateDir, name), Log: log.With("driver", name)}
	}
	fd, err := files.New(env("files"))
	if err != nil {
		return nil, nil, err
	}
	// Cloud outputs resolve before any driver plans; the resolver is also a
	// driver so its report and watch are used.
	if w.cloud, err = newCloudSource(filepath.Join(cfg.StateDir, "cloud")); err != nil {
		return nil, nil, err
	}
	cr := cloudref.New(w.cloud, log.With("driver", "cloud"))
	w.prepare = cr.Prepare
	return []driver.Driver{cr, fd}, w, nil
}
