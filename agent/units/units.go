// Package units is the agent driver for spec.units: systemd unit files and
// the native executables they run, driven over D-Bus (daemon-reload, enable,
// start; restart when the file or binary changes; stop, disable and remove
// when a unit leaves the blueprint).
package units

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/internal/throttle"
)

// DefaultUnitDir is where unit files are written, under Env.Root.
const DefaultUnitDir = "/etc/systemd/system"

// Config builds a Driver.
type Config struct {
	// Env.Root is the file system systemd sees ("/" in production; in tests
	// /proc/<container pid 1>/root); unit files and executables are written
	// under it. Env.StateDir keeps what the driver owns.
	Env driver.Env
	// UnitDir is the unit directory inside Root (default DefaultUnitDir).
	UnitDir string
	// Bus connects to systemd's bus; nil means the system bus.
	Bus func(ctx context.Context) (*dbus.Conn, error)
	// Artifacts provides executables; nil fails units that declare one.
	Artifacts artifacts.Fetcher
	// RestartBackoff is the first pause before starting again a unit that
	// stopped again soon after the agent started it (default 1 s; it
	// doubles up to 5 minutes). The first repair is always immediate.
	RestartBackoff time.Duration
}

// Driver manages spec.units. Plan may be called any number of times with the
// same blueprint; applying its changes twice is harmless.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	conn    *sd.Conn
	owned   map[string]owned // unit name -> what the driver installed, persisted
	wanted  []blueprint.Unit // from the last Plan, for Report and Watch
	repairs map[string]uint64
	errs    map[string]string
	exeSums map[string]exeSum // path -> sha256 by size and mtime, to avoid rehashing
	changed chan struct{}
	retry   *throttle.Retry // spaces restarts of a unit that keeps failing
}

type owned struct {
	Executable string `json:"executable,omitempty"`
	Running    bool   `json:"running,omitempty"` // the agent had it converged: stopping it is drift
	Ran        string `json:"ran,omitempty"`     // spec hash of the last successful start
}

type exeSum struct {
	size, mtime int64
	sha         string
}

var (
	_ driver.Driver   = (*Driver)(nil)
	_ driver.Watcher  = (*Driver)(nil)
	_ driver.Reporter = (*Driver)(nil)
)

// New builds the driver and loads what it owns; it connects to systemd
// lazily.
func New(cfg Config) (*Driver, error) {
	if cfg.Env.Root == "" {
		cfg.Env.Root = "/"
	}
	if cfg.Env.Log == nil {
		cfg.Env.Log = slog.Default()
	}
	if cfg.UnitDir == "" {
		cfg.UnitDir = DefaultUnitDir
	}
	if cfg.Bus == nil {
		cfg.Bus = func(ctx context.Context) (*dbus.Conn, error) { return dbus.ConnectSystemBus(dbus.WithContext(ctx)) }
	}
	if err := os.MkdirAll(cfg.Env.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("units: state dir: %w", err)
	}
	d := &Driver{cfg: cfg, log: cfg.Env.Log.With("driver", "units"), owned: map[string]owned{},
		repairs: map[string]uint64{}, errs: map[string]string{}, exeSums: map[string]exeSum{}, changed: make(chan struct{}, 1),
		retry: throttle.NewRetry(cmp.Or(cfg.RestartBackoff, time.Second), 5*time.Minute, time.Minute)}
	b, err := os.ReadFile(d.ownedPath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &d.owned); err != nil {
			return nil, fmt.Errorf("units: %s: %w", d.ownedPath(), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	return d, nil
}

// DialBus returns a Config.Bus that connects to a D-Bus address such as
// unix:path=/run/dbus/system_bus_socket.
func DialBus(address string) func(ctx context.Context) (*dbus.Conn, error) {
	return func(ctx context.Context) (*dbus.Conn, error) {
		c, err := dbus.Dial(address, dbus.WithContext(ctx))
		if err != nil {
			return nil, err
		}
		if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
			c.Close()
			return nil, err
		}
		if err := c.Hello(); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "units" }

func (d *Driver) ownedPath() string { return filepath.Join(d.cfg.Env.StateDir, "owned.json") }

func (d *Driver) saveOwned() error {
	b, err := json.Marshal(d.owned)
	if err != nil {
		return err
	}
	return fileio.WriteFile(d.ownedPath(), b, 0o600)
}

func (d *Driver) systemd(ctx context.Context) (*sd.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != nil && d.conn.Connected() {
		return d.conn, nil
	}
	if d.conn != nil {
		d.conn.Close()
		d.conn = nil
	}
	c, err := sd.NewConnection(func() (*dbus.Conn, error) { return d.cfg.Bus(ctx) })
	if err != nil {
		return nil, fmt.Errorf("systemd D-Bus: %w", err)
	}
	d.conn = c
	return c, nil
}

func (d *Driver) unitPath(name string) string {
	return filepath.Join(d.cfg.Env.Root, d.cfg.UnitDir, name)
}

func (d *Driver) hostPath(p string) string { return filepath.Join(d.cfg.Env.Root, p) }

// observed is one unit as found on disk and in systemd.
type observed struct {
	file       *string // nil: no unit file
	exeSHA     string  // "" when absent
	exeMode    uint32
	load       string // loaded, not-found, bad-setting, error, masked
	active     string // active, inactive, failed, activating, ...
	sub        string
	fileState  string // enabled, disabled, static, ...
	needReload bool
	oneshot    bool // a Type=oneshot service
}

// Plan observes every desired and owned unit and returns the changes.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	d.mu.Lock()
	d.wanted = append([]blueprint.Unit(nil), bp.Spec.Units...)
	own := make(map[string]owned, len(d.owned))
	for k, v := range d.owned {
		own[k] = v
	}
	d.mu.Unlock()
	if len(bp.Spec.Units) == 0 && len(own) == 0 {
		return nil, nil // nothing to manage: a node without systemd is fine
	}
	conn, err := d.systemd(ctx)
	if err != nil {
		return nil, err
	}
	d.notifyWatchSet()
	obs := map[string]observed{}
	var plan driver.Plan
	var units []blueprint.Unit
	for _, u := range bp.Spec.Units {
		o, err := d.observe(ctx, conn, u.Name, u.Executable)
		if err != nil {
			if !conn.Connected() {
				return nil, err
			}
			// systemd refuses this one unit (a name it does not accept):
			// report it as that unit's failure and plan the others.
			plan = append(plan, d.failed(u.Name, err))
			continue
		}
		obs[u.Name] = o
		units = append(units, u)
	}
	for name := range own {
		if _, ok := obs[name]; !ok {
			if obs[name], err = d.observe(ctx, conn, name, nil); err != nil {
				return nil, err
			}
		}
	}
	now := time.Now()
	for _, c := range diff(units, obs, own) {
		if c.repair && c.start != nil && *c.start && !c.writeExe && !c.writeFile && c.enable == nil {
			// A unit that keeps failing is restarted with growing pauses,
			// not in a tight loop.
			if next := d.retry.Next(c.unit.Name); now.Before(next) {
				d.retry.WakeAt(c.unit.Name, next, "units: restart backoff of "+c.unit.Name+" over")
				continue
			}
		}
		plan = append(plan, d.bind(c))
	}
	for _, u := range bp.Spec.Units {
		if active(obs[u.Name].active) {
			d.retry.Up(u.Name, now)
		}
	}
	return plan, nil
}

// failed is a change that reports err for one unit when applied, so the
// unit shows as failed while the rest of the section still applies.
func (d *Driver) failed(name string, err error) driver.Change {
	return driver.NewChange(blueprint.ResourceID("unit", name), driver.Update, "cannot be observed", func(context.Context) error {
		d.mu.Lock()
		d.errs[name] = err.Error()
		d.mu.Unlock()
		return err
	})
}

func (d *Driver) observe(ctx context.Context, conn *sd.Conn, name string, exe *blueprint.Executable) (observed, error) {
	var o observed
	if b, err := os.ReadFile(d.unitPath(name)); err == nil {
		s := string(b)
		o.file = &s
	}
	if exe != nil {
		o.exeSHA, o.exeMode = d.exeSHA(d.hostPath(exe.Path))
	}
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return o, fmt.Errorf("unit %q: reading its properties: %w", name, err)
	}
	o.load, _ = props["LoadState"].(string)
	o.active, _ = props["ActiveState"].(string)
	o.sub, _ = props["SubState"].(string)
	o.fileState, _ = props["UnitFileState"].(string)
	o.needReload, _ = props["NeedDaemonReload"].(bool)
	if strings.HasSuffix(name, ".service") && o.active == "inactive" && o.load == "loaded" {
		sp, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service")
		if err == nil {
			typ, _ := sp["Type"].(string)
			o.oneshot = typ == "oneshot"
		}
	}
	return o, nil
}

// exeSHA hashes an installed executable, remembering the digest by size and
// mtime so an unchanged binary is not re-read on every pass.
func (d *Driver) exeSHA(p string) (string, uint32) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", 0
	}
	mode := uint32(fi.Mode().Perm())
	d.mu.Lock()
	c, ok := d.exeSums[p]
	d.mu.Unlock()
	if ok && c.size == fi.Size() && c.mtime == fi.ModTime().UnixNano() {
		return c.sha, mode
	}
	sha, err := artifacts.FileSHA256(p)
	if err != nil {
		return "", mode
	}
	d.mu.Lock()
	d.exeSums[p] = exeSum{fi.Size(), fi.ModTime().UnixNano(), sha}
	d.mu.Unlock()
	return sha, mode
}

// change is a pure description of what to do with one unit.
type change struct {
	unit      blueprint.Unit
	op        driver.Op
	why       []string
	writeExe  bool
	writeFile bool
	reload    bool // systemd must re-read unit files
	restart   bool // the file or binary changed while it runs
	enable    *bool
	start     *bool // true: start, false: stop, nil: leave
	repair    bool
	exe       string // for deletion: the executable the driver installed
}

func (c change) detail() string { return strings.Join(c.why, ", ") }

func active(s string) bool { return s == "active" || s == "activating" || s == "reloading" }

// diff compares desired and observed units; it does no I/O.
func diff(want []blueprint.Unit, obs map[string]observed, own map[string]owned) []change {
	var out []change
	names := map[string]bool{}
	for _, u := range want {
		names[u.Name] = true
		o := obs[u.Name]
		c := change{unit: u, op: driver.Update}
		if o.file == nil {
			c.op = driver.Create
		}
		if e := u.Executable; e != nil && e.Artifact != nil {
			mode, _ := blueprint.ParseMode(e.Mode, 0o755)
			switch {
			case o.exeSHA == "":
				c.writeExe, c.why = true, append(c.why, "executable missing")
			case o.exeSHA != strings.ToLower(e.Artifact.SHA256):
				c.writeExe, c.why = true, append(c.why, "executable changed")
			case o.exeMode != mode:
				c.writeExe, c.why = true, append(c.why, fmt.Sprintf("executable mode %04o, want %04o", o.exeMode, mode))
			}
		}
		switch {
		case o.file == nil:
			c.writeFile, c.why = true, append(c.why, "unit file missing")
		case *o.file != u.Content:
			c.writeFile, c.why = true, append(c.why, "unit file changed")
		case o.needReload:
			c.why = append(c.why, "systemd needs a daemon-reload")
		}
		c.reload = c.writeFile || o.needReload
		wantStarted := u.State != "stopped"
		if wantStarted && o.file != nil && active(o.active) && (c.writeFile || c.writeExe) {
			c.restart = true
		}
		// A oneshot service is done once it ran for this spec (systemd may
		// have unloaded it since, forgetting that it ran): starting it on
		// every pass would run its job again.
		ran := o.oneshot && own[u.Name].Ran == specHash(u) && !c.writeFile && !c.writeExe
		if wantStarted && !active(o.active) && !ran {
			c.start = ptr(true)
			c.why = append(c.why, fmt.Sprintf("%s, want started", orUnknown(o.active)))
			if own[u.Name].Running && !c.writeFile && !c.writeExe {
				c.repair = true
			}
		}
		if !wantStarted && active(o.active) {
			c.start = ptr(false)
			c.why = append(c.why, o.active+", want stopped")
		}
		wantEnabled := u.Enabled == nil || *u.Enabled
		switch {
		case c.writeFile && wantEnabled:
			c.enable = ptr(true) // a new file may carry a new [Install] section
		case wantEnabled && o.fileState == "disabled":
			c.enable, c.why = ptr(true), append(c.why, "disabled, want enabled")
			if own[u.Name].Running {
				c.repair = true
			}
		case !wantEnabled && (o.fileState == "enabled" || c.writeFile):
			c.enable, c.why = ptr(false), append(c.why, "want disabled")
		}
		if len(c.why) > 0 {
			out = append(out, c)
		}
	}
	for name, ow := range own {
		if names[name] {
			continue
		}
		out = append(out, change{unit: blueprint.Unit{Name: name}, op: driver.Delete, why: []string{"left the blueprint"}, exe: ow.Executable})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].unit.Name < out[j].unit.Name })
	return out
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func ptr[T any](v T) *T { return &v }

func (d *Driver) bind(c change) driver.Change {
	id := blueprint.ResourceID("unit", c.unit.Name)
	return driver.NewChange(id, c.op, c.detail(), func(ctx context.Context) error {
		var err error
		if c.op == driver.Delete {
			err = d.remove(ctx, c)
		} else {
			err = d.apply(ctx, c)
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.errs[c.unit.Name] = err.Error()
			return err
		}
		delete(d.errs, c.unit.Name)
		if c.repair {
			d.repairs[c.unit.Name]++
			if c.start != nil && *c.start {
				d.retry.Restarted(c.unit.Name, time.Now())
			}
		}
		if c.op == driver.Delete {
			delete(d.repairs, c.unit.Name)
			d.retry.Forget(c.unit.Name)
		}
		return nil
	})
}

func (d *Driver) apply(ctx context.Context, c change) error {
	conn, err := d.systemd(ctx)
	if err != nil {
		return err
	}
	u := c.unit
	// Own the unit before touching the node, so a crash half-way still
	// leaves something the driver knows to clean up.
	d.mu.Lock()
	ow, known := d.owned[u.Name]
	if u.Executable != nil {
		ow.Executable = u.Executable.Path
	}
	d.owned[u.Name] = ow
	if !known || u.Executable != nil {
		if err := d.saveOwned(); err != nil {
			d.mu.Unlock()
			return err
		}
	}
	d.mu.Unlock()

	if c.writeExe {
		if err := d.installExe(ctx, u); err != nil {
			return err
		}
	}
	if c.writeFile {
		if err := fileio.WriteFile(d.unitPath(u.Name), []byte(u.Content), 0o644, fileio.MkdirAll(0o755)); err != nil {
			return fmt.Errorf("unit %q: writing unit file: %w", u.Name, err)
		}
	}
	// Reload only when files changed: every reload is a signal the watcher
	// acts on, and a unit that keeps failing must not make a loop of them.
	if c.reload {
		if err := conn.ReloadContext(ctx); err != nil {
			return fmt.Errorf("unit %q: daemon-reload: %w", u.Name, err)
		}
	}
	if err := d.loaded(ctx, conn, u.Name); err != nil {
		return err
	}
	if c.enable != nil {
		if *c.enable {
			if _, _, err := conn.EnableUnitFilesContext(ctx, []string{u.Name}, false, true); err != nil {
				return fmt.Errorf("unit %q: enable: %w", u.Name, err)
			}
		} else if _, err := conn.DisableUnitFilesContext(ctx, []string{u.Name}, false); err != nil {
			return fmt.Errorf("unit %q: disable: %w", u.Name, err)
		}
		if err := conn.ReloadContext(ctx); err != nil {
			return fmt.Errorf("unit %q: daemon-reload: %w", u.Name, err)
		}
	}
	switch {
	case c.start != nil && !*c.start:
		if err := d.job(ctx, conn, u.Name, "stop", conn.StopUnitContext); err != nil {
			return err
		}
	case c.restart:
		if err := d.job(ctx, conn, u.Name, "restart", conn.RestartUnitContext); err != nil {
			return err
		}
	case c.start != nil && *c.start:
		if err := d.job(ctx, conn, u.Name, "start", conn.StartUnitContext); err != nil {
			return err
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	ow = d.owned[u.Name]
	ow.Running = u.State != "stopped"
	if (c.start != nil && *c.start) || c.restart {
		ow.Ran = specHash(u)
	}
	d.owned[u.Name] = ow
	return d.saveOwned()
}

// specHash identifies what a unit runs: its file and its executable.
func specHash(u blueprint.Unit) string {
	h := sha256.New()
	h.Write([]byte(u.Content))
	if e := u.Executable; e != nil && e.Artifact != nil {
		h.Write([]byte("\x00" + e.Path + "\x00" + strings.ToLower(e.Artifact.SHA256)))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loaded turns systemd's verdict on a unit file into a terminal error: a
// file systemd rejects stays rejected until the blueprint changes.
func (d *Driver) loaded(ctx context.Context, conn *sd.Conn, name string) error {
	props, err := conn.GetUnitPropertiesContext(ctx, name)
	if err != nil {
		return fmt.Errorf("unit %q: %w", name, err)
	}
	state, _ := props["LoadState"].(string)
	if state == "loaded" {
		return nil
	}
	msg := ""
	if le, ok := props["LoadError"].([]any); ok && len(le) == 2 {
		msg = fmt.Sprintf(": %v (%v)", le[1], le[0])
	}
	return driver.Terminal(fmt.Errorf("unit %q: systemd refused the unit file, load state %q%s", name, state, msg))
}

type jobFn func(ctx context.Context, name, mode string, ch chan<- string) (int, error)

// job runs a start, stop or restart and waits for its result; a failed job
// reports the unit's own result and exit status.
func (d *Driver) job(ctx context.Context, conn *sd.Conn, name, what string, fn jobFn) error {
	ch := make(chan string, 1)
	if _, err := fn(ctx, name, "replace", ch); err != nil {
		return fmt.Errorf("unit %q: %s: %w", name, what, err)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case res := <-ch:
		if res == "done" {
			return nil
		}
		return fmt.Errorf("unit %q: %s job %s: %s", name, what, res, d.why(ctx, conn, name))
	}
}

// why describes a unit's failure as systemd records it.
func (d *Driver) why(ctx context.Context, conn *sd.Conn, name string) string {
	props, err := conn.GetUnitTypePropertiesContext(ctx, name, "Service")
	if err != nil {
		return "no details"
	}
	result, _ := props["Result"].(string)
	status, _ := props["ExecMainStatus"].(int32)
	return fmt.Sprintf("result %s, main process exit status %d", result, status)
}

func (d *Driver) installExe(ctx context.Context, u blueprint.Unit) error {
	e := u.Executable
	if d.cfg.Artifacts == nil {
		return fmt.Errorf("unit %q: executable %s: this agent has no artifact source", u.Name, e.Path)
	}
	src, err := d.cfg.Artifacts.Fetch(ctx, *e.Artifact)
	if err != nil {
		return fmt.Errorf("unit %q: executable %s: %w", u.Name, e.Path, err)
	}
	mode, err := blueprint.ParseMode(e.Mode, 0o755)
	if err != nil {
		return driver.Terminal(fmt.Errorf("unit %q: executable.mode: %w", u.Name, err))
	}
	dst := d.hostPath(e.Path)
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	// A new file renamed over the old one, not written into it: a running
	// binary cannot be written ("text file busy") but can be replaced.
	out, err := fileio.Create(dst, fs.FileMode(mode), fileio.MkdirAll(0o755))
	if err == nil {
		defer out.Discard()
		_, err = io.Copy(out, in)
	}
	if err == nil {
		err = out.Commit()
	}
	if err != nil {
		return fmt.Errorf("unit %q: installing executable %s: %w", u.Name, e.Path, err)
	}
	return nil
}

// remove stops and disables a unit that left the blueprint and deletes its
// file and the executable the driver installed for it.
func (d *Driver) remove(ctx context.Context, c change) error {
	conn, err := d.systemd(ctx)
	if err != nil {
		return err
	}
	name := c.unit.Name
	if err := d.job(ctx, conn, name, "stop", conn.StopUnitContext); err != nil && !notLoaded(err) {
		return err
	}
	if _, err := conn.DisableUnitFilesContext(ctx, []string{name}, false); err != nil && !notLoaded(err) {
		return fmt.Errorf("unit %q: disable: %w", name, err)
	}
	if err := os.Remove(d.unitPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if c.exe != "" {
		if err := os.Remove(d.hostPath(c.exe)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("unit %q: daemon-reload: %w", name, err)
	}
	conn.ResetFailedUnitContext(ctx, name) // nothing to reset is fine
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.owned, name)
	return d.saveOwned()
}

func notLoaded(err error) bool {
	s := err.Error()
	return strings.Contains(s, "not loaded") || strings.Contains(s, "does not exist") || strings.Contains(s, "No such file")
}
