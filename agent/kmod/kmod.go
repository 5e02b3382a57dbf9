// Package kmod is the agent driver for spec.kernelModules: modules loaded or
// blacklisted now, and persisted for the next boot in modules-load.d and
// modprobe.d (options included).
package kmod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
)

// Files the driver owns, under the agent's root.
const (
	LoadFile     = "/etc/modules-load.d/alpha.conf"
	ModprobeFile = "/etc/modprobe.d/alpha.conf"
)

// Driver manages spec.kernelModules. A module that leaves the blueprint is
// dropped from the persistence files but not unloaded: unloading a module
// something still uses is riskier than leaving it until the next boot.
type Driver struct {
	env driver.Env
	run oscmd.Runner
}

var _ driver.Driver = (*Driver)(nil)

// New builds the driver; run is how modprobe is invoked.
func New(env driver.Env, run oscmd.Runner) *Driver {
	if env.Root == "" {
		env.Root = "/"
	}
	if env.Log == nil {
		env.Log = slog.Default()
	}
	return &Driver{env: env, run: run}
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "kernelModules" }

// ResourceID is a module's id in plans and drift events.
func ResourceID(name string) string { return blueprint.ResourceID("kmod", name) }

// Loaded reports whether the kernel has the module, loaded or built in:
// both show up under /sys/module (names use _ where modprobe accepts -).
func (d *Driver) Loaded(name string) bool {
	_, err := os.Stat(filepath.Join(d.env.Root, "sys/module", strings.ReplaceAll(name, "-", "_")))
	return err == nil
}

// Render returns the contents of the two persistence files; pure.
func Render(ms []blueprint.KernelModule) (load, modprobe string) {
	const head = "# Written by the alpha agent from the node's blueprint; edits are reverted.\n"
	var l, m strings.Builder
	for _, k := range ms {
		switch k.State {
		case "blacklisted":
			// blacklist stops autoloading by alias; install makes an
			// explicit modprobe fail too.
			fmt.Fprintf(&m, "blacklist %s\ninstall %s /bin/false\n", k.Name, k.Name)
		default:
			fmt.Fprintf(&l, "%s\n", k.Name)
			if k.Options != "" {
				fmt.Fprintf(&m, "options %s %s\n", k.Name, k.Options)
			}
		}
	}
	if l.Len() > 0 {
		load = head + l.String()
	}
	if m.Len() > 0 {
		modprobe = head + m.String()
	}
	return load, modprobe
}

// Plan compares the kernel's modules and the persistence files with the
// blueprint.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	var plan driver.Plan
	ms := bp.Spec.KernelModules
	for _, k := range ms {
		k := k
		loaded := d.Loaded(k.Name)
		switch {
		case k.State == "blacklisted" && loaded:
			c := driver.NewChange(ResourceID(k.Name), driver.Delete, k.Name+" is loaded, want blacklisted", func(ctx context.Context) error {
				if _, err := d.run.Run(ctx, nil, "modprobe", "-r", "--", k.Name); err != nil {
					return fmt.Errorf("kmod: unloading %s (built into the kernel, or in use?): %w", k.Name, err)
				}
				return nil
			})
			c.Found, c.Want = "loaded", "blacklisted"
			plan = append(plan, c)
		case k.State != "blacklisted" && !loaded:
			// "--" ends modprobe's flags: whatever the name and options
			// hold, they are a module and its parameters. Without it a
			// name or option like "-C FILE" made modprobe read the
			// attacker's config and run its install command as root.
			args := append([]string{"--", k.Name}, strings.Fields(k.Options)...)
			c := driver.NewChange(ResourceID(k.Name), driver.Create, k.Name+" is not loaded", func(ctx context.Context) error {
				if _, err := d.run.Run(ctx, nil, "modprobe", args...); err != nil {
					return fmt.Errorf("kmod: loading %s: %w", k.Name, err)
				}
				return nil
			})
			c.Found, c.Want = "absent", "loaded"
			plan = append(plan, c)
		}
	}
	load, modprobe := Render(ms)
	for _, f := range []struct{ path, content string }{{LoadFile, load}, {ModprobeFile, modprobe}} {
		f := f
		full := filepath.Join(d.env.Root, f.path)
		cur, err := os.ReadFile(full)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return plan, err
		}
		if string(cur) == f.content {
			continue
		}
		op := driver.Update
		if f.content == "" {
			op = driver.Delete
		}
		plan = append(plan, driver.NewChange(blueprint.ResourceID("file", f.path), op, f.path+" differs", func(ctx context.Context) error {
			return files.Put(d.env.Root, f.path, []byte(f.content), 0o644)
		}))
	}
	return plan, nil
}
