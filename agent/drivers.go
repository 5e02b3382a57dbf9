package agent

import (
	"log/slog"
	"path/filepath"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
)

// buildDrivers is the one place that decides which drivers a node runs and
// in what order they plan (the engine then orders changes by dependsOn).
func buildDrivers(cfg Config, log *slog.Logger) ([]driver.Driver, error) {
	env := func(name string) driver.Env {
		return driver.Env{Root: cfg.Root, StateDir: filepath.Join(cfg.StateDir, name), Log: log.With("driver", name)}
	}
	fd, err := files.New(env("files"))
	if err != nil {
		return nil, err
	}
	return []driver.Driver{fd}, nil
}
