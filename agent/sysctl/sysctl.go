// Package sysctl is the agent driver for spec.sysctl: kernel parameters set
// at once, persisted in a sysctl.d drop-in so they survive a reboot, and put
// back when someone changes them by hand.
package sysctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
)

// DropIn is where the values persist, under the agent's root.
const DropIn = "/etc/sysctl.d/90-alpha.conf"

// ErrNoSuchKey means the kernel has no such parameter (nothing under /proc/sys).
var ErrNoSuchKey = errors.New("no such sysctl key")

// PollInterval is how often the watcher reads the managed keys: the kernel
// sends no notification when a sysctl changes.
var PollInterval = 500 * time.Millisecond

// Driver manages spec.sysctl. Plan may be called any number of times;
// setting a value twice is harmless.
type Driver struct {
	env driver.Env
	run oscmd.Runner

	mu    sync.Mutex
	want  map[string]string // values of the last planned blueprint, for the watcher
	last  map[string]string // value last read by the watcher or written by the driver
	state map[string]string // key -> value found before the agent first set it
}

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Watcher = (*Driver)(nil)
	_ applier        = (*Driver)(nil)
)

// New builds the driver; run is how sysctl is invoked (empty prefix in
// production, a network namespace in tests: net.* keys are per namespace).
func New(env driver.Env, run oscmd.Runner) (*Driver, error) {
	if env.Root == "" {
		env.Root = "/"
	}
	if env.Log == nil {
		env.Log = slog.Default()
	}
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("sysctl: state dir: %w", err)
	}
	d := &Driver{env: env, run: run, state: map[string]string{}, last: map[string]string{}}
	b, err := os.ReadFile(d.statePath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &d.state); err != nil {
			return nil, fmt.Errorf("sysctl: %s: %w", d.statePath(), err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	return d, nil
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "sysctl" }

func (d *Driver) statePath() string { return filepath.Join(d.env.StateDir, "original.json") }

func (d *Driver) dropIn() string { return filepath.Join(d.env.Root, DropIn) }

// ResourceID is the id of one key in plans and drift events.
func ResourceID(key string) string { return blueprint.ResourceID("sysctl", key) }

// Normalize makes values comparable: the kernel prints vectors with tabs
// ("4096\t87380\t6291456") where a blueprint has spaces.
func Normalize(v string) string { return strings.Join(strings.Fields(v), " ") }

// Read returns a key's current value.
func (d *Driver) Read(ctx context.Context, key string) (string, error) {
	out, err := d.run.Run(ctx, nil, "sysctl", "-n", key)
	if err != nil {
		var ee *oscmd.Error
		if errors.As(err, &ee) && strings.Contains(ee.Stderr, "No such file or directory") {
			return "", fmt.Errorf("%w: %q (nothing at /proc/sys/%s)", ErrNoSuchKey, key, strings.ReplaceAll(key, ".", "/"))
		}
		return "", fmt.Errorf("sysctl: reading %s: %w", key, err)
	}
	return Normalize(string(out)), nil
}

// Plan reads every key and the drop-in, then leaves the decision to plan.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	want := bp.Spec.Sysctl
	d.mu.Lock()
	d.want = map[string]string{}
	for k, v := range want {
		d.want[k] = Normalize(v)
	}
	orig := make(map[string]string, len(d.state))
	for k, v := range d.state {
		orig[k] = v
	}
	d.mu.Unlock()
	return plan(d, want, orig, d.observe(ctx, want))
}

// observed is what the node has: each wanted key's value, or why it could
// not be read, and the drop-in's content ("" when absent or unreadable).
type observed struct {
	values map[string]string
	errs   map[string]error
	dropIn string
}

// observe reads every key of want and the drop-in. It changes nothing.
func (d *Driver) observe(ctx context.Context, want map[string]string) observed {
	obs := observed{values: map[string]string{}, errs: map[string]error{}}
	for k := range want {
		v, err := d.Read(ctx, k)
		if err != nil {
			obs.errs[k] = err
			continue
		}
		obs.values[k] = v
	}
	cur, _ := os.ReadFile(d.dropIn())
	obs.dropIn = string(cur)
	return obs
}

// applier is what the changes of a plan do to the node: *Driver in
// production, a recorder in the tests of plan.
type applier interface {
	set(ctx context.Context, key, value, found string) error
	restore(ctx context.Context, key, value string) error
	persist(content string) error
}

// plan compares the wanted keys (want), the values found before the agent
// first set each key (orig) and what observe found. It does no I/O, so
// unit tests call it with made-up observations; only the changes' Apply
// touch the node, through a.
//
// It returns a change per value that differs, one to restore each key that
// left the blueprint, and one for the drop-in file, in that order. An
// unknown key becomes a change that fails with ErrNoSuchKey, naming the
// field, so the other keys still apply and status shows the bad one. A key
// that could not be read is a Plan error and is left out of the drop-in
// until it can be.
func plan(a applier, want, orig map[string]string, obs observed) (driver.Plan, error) {
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var p driver.Plan
	var problems []error
	valid := map[string]string{}
	for _, k := range keys {
		found, ok := obs.values[k]
		err := obs.errs[k]
		if !ok && err == nil {
			// Planning from a guess could overwrite a value nobody read.
			err = fmt.Errorf("sysctl: %s was not read", k)
		}
		if errors.Is(err, ErrNoSuchKey) {
			// A failing change rather than a Plan error: the engine then
			// still applies the other keys and marks this one failed.
			err := driver.Terminal(fmt.Errorf("spec.sysctl.%s: %w", k, err))
			p = append(p, driver.NewChange(ResourceID(k), driver.Update, err.Error(), func(context.Context) error { return err }))
			continue
		}
		if err != nil {
			problems = append(problems, fmt.Errorf("spec.sysctl.%s: %w", k, err))
			continue
		}
		w := Normalize(want[k])
		valid[k] = w
		if found == w {
			continue
		}
		k := k
		c := driver.NewChange(ResourceID(k), driver.Update, fmt.Sprintf("%s is %q, want %q", k, found, w), func(ctx context.Context) error {
			return a.set(ctx, k, w, found)
		})
		c.Found, c.Want = found, w
		p = append(p, c)
	}
	var gone []string
	for k := range orig {
		if _, ok := want[k]; !ok {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		k, v := k, orig[k]
		p = append(p, driver.NewChange(ResourceID(k), driver.Delete, fmt.Sprintf("%s left the blueprint; restoring %q", k, v), func(ctx context.Context) error {
			return a.restore(ctx, k, v)
		}))
	}
	if content := render(valid); obs.dropIn != content {
		op := driver.Update
		if len(valid) == 0 {
			op = driver.Delete
		}
		p = append(p, driver.NewChange(blueprint.ResourceID("file", DropIn), op, "sysctl.d drop-in differs", func(ctx context.Context) error {
			return a.persist(content)
		}))
	}
	return p, errors.Join(problems...)
}

func render(vals map[string]string) string {
	if len(vals) == 0 {
		return ""
	}
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("# Written by the alpha agent from the node's blueprint; edits are reverted.\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "%s = %s\n", k, vals[k])
	}
	return b.String()
}

func (d *Driver) set(ctx context.Context, key, value, found string) error {
	d.mu.Lock()
	_, known := d.state[key]
	d.mu.Unlock()
	if !known {
		// Remember what the node had, to put it back when the key leaves
		// the blueprint.
		if err := d.remember(func(s map[string]string) { s[key] = found }); err != nil {
			return err
		}
	}
	if _, err := d.run.Run(ctx, nil, "sysctl", "-q", "-w", key+"="+value); err != nil {
		return fmt.Errorf("sysctl: setting %s=%q: %w", key, value, err)
	}
	// The watcher must see a change by hand after this write even if it
	// never read the value we wrote.
	d.mu.Lock()
	d.last[key] = value
	d.mu.Unlock()
	return nil
}

func (d *Driver) restore(ctx context.Context, key, value string) error {
	if _, err := d.run.Run(ctx, nil, "sysctl", "-q", "-w", key+"="+value); err != nil {
		return fmt.Errorf("sysctl: restoring %s=%q: %w", key, value, err)
	}
	return d.remember(func(s map[string]string) { delete(s, key) })
}

func (d *Driver) remember(fn func(map[string]string)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d.state)
	b, _ := json.Marshal(d.state)
	return fileio.WriteFile(d.statePath(), b, 0o600)
}

// persist writes (or, empty, removes) the drop-in through os.Root, so a
// symlink planted under the agent's root leads no write out of it.
func (d *Driver) persist(content string) error {
	return files.Put(d.env.Root, DropIn, []byte(content), 0o644)
}

// Watch polls the managed keys every PollInterval and asks for a reconcile
// when one differs from the blueprint and from what the previous read saw
// (once per change, so a value the kernel refuses does not spin the engine).
// The driver's own writes count as reads, so the same manual change made
// twice between two polls is still noticed.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	return driver.Poll(ctx, PollInterval, func(ctx context.Context) {
		d.mu.Lock()
		want := d.want
		d.mu.Unlock()
		for k, w := range want {
			v, err := d.Read(ctx, k)
			if err != nil {
				continue
			}
			d.mu.Lock()
			changed := v != d.last[k]
			d.last[k] = v
			d.mu.Unlock()
			if v != w && changed {
				notify("sysctl " + k + " changed")
			}
		}
	})
}
