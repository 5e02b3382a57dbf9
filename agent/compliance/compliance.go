// Package compliance is the agent driver for spec.compliance: security
// policies checked on every pass and, where the agent can fix them safely,
// enforced. Results become per-policy resources (compliance:NAME) and a node
// score, the fraction of policies passing.
package compliance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// SecureBootVar is the EFI variable that holds the Secure Boot state.
const SecureBootVar = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"

// ErrOutsideRoot means a fileContent path leads out of the agent's root (a
// symlink inside the root points out of it): the file is neither read nor
// written.
var ErrOutsideRoot = errors.New("compliance: path leads outside the root")

// Result is one policy's outcome.
type Result struct {
	Policy  string `json:"policy"`
	Type    string `json:"type"`
	Mode    string `json:"mode"`
	Pass    bool   `json:"pass"`
	Message string `json:"message"`
}

// Driver checks spec.compliance. Everything is read under Env.Root, so tests
// fake efivars, securityfs, selinuxfs, /proc/mounts and /etc/crypttab. Only
// fileContent policies are enforced: Secure Boot, disk encryption and the
// LSM mode cannot be changed safely from a running node, so in enforce mode
// they are reported like audits, saying so.
type Driver struct {
	env driver.Env

	mu       sync.Mutex
	policies []blueprint.Policy
	results  []Result
	passed   map[string]bool // enforced file policies: last seen passing (watcher and writes)
}

var (
	_ driver.Driver   = (*Driver)(nil)
	_ driver.Reporter = (*Driver)(nil)
	_ driver.Watcher  = (*Driver)(nil)
)

// PollInterval is how often the watcher re-checks enforced file policies.
// The checks are a few small file reads; polling keeps the driver free of
// inotify bookkeeping for files that may not exist yet.
var PollInterval = time.Second

// New builds the driver.
func New(env driver.Env) *Driver {
	if env.Root == "" {
		env.Root = "/"
	}
	if env.Log == nil {
		env.Log = slog.Default()
	}
	return &Driver{env: env, passed: map[string]bool{}}
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "compliance" }

// ResourceID is a policy's id in status.
func ResourceID(name string) string { return blueprint.ResourceID("compliance", name) }

func (d *Driver) path(p string) string { return filepath.Join(d.env.Root, p) }

// openRoot opens the agent's root for one fileContent check or write. Those
// paths come from the blueprint and the files they name may be replaced by
// anyone who can write inside the root, so, as in the files driver, every
// access goes through os.Root: a symlink that leads out of the root is
// refused, not followed, and no file outside is written or quoted in status.
func (d *Driver) openRoot() (*os.Root, error) { return os.OpenRoot(d.env.Root) }

// outside turns os.Root's refusal of an escaping path into ErrOutsideRoot,
// naming the policy's path; other errors pass unchanged. os has no exported
// error for it, so its message is what identifies it.
func outside(p string, err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes from parent") {
		return fmt.Errorf("%w: %s (a symlink inside the root points out of it); not read, not enforced", ErrOutsideRoot, p)
	}
	return err
}

func (d *Driver) readFile(p string) ([]byte, error) {
	root, err := d.openRoot()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	b, err := root.ReadFile(strings.TrimPrefix(p, "/"))
	return b, outside(p, err)
}

// Plan checks every policy and returns a change for each failing fileContent
// policy in enforce mode. Checking only reads.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	var pols []blueprint.Policy
	if bp.Spec.Compliance != nil {
		pols = bp.Spec.Compliance.Policies
	}
	results := d.check(pols)
	d.mu.Lock()
	d.policies, d.results = pols, results
	d.mu.Unlock()
	var plan driver.Plan
	for i, pol := range pols {
		if results[i].Pass || pol.Mode != "enforce" || pol.Type != "fileContent" {
			continue
		}
		pol := pol
		c := driver.NewChange(ResourceID(pol.Name), driver.Update, results[i].Message, func(ctx context.Context) error {
			return d.enforceLine(pol)
		})
		c.Want = pol.Line
		plan = append(plan, c)
	}
	return plan, nil
}

func (d *Driver) check(pols []blueprint.Policy) []Result {
	out := make([]Result, len(pols))
	for i, pol := range pols {
		r := Result{Policy: pol.Name, Type: pol.Type, Mode: pol.Mode}
		if r.Mode == "" {
			r.Mode = "audit"
		}
		switch pol.Type {
		case "secureBoot":
			r.Pass, r.Message = d.secureBoot(pol)
		case "selinux":
			r.Pass, r.Message = d.selinux(pol)
		case "apparmor":
			r.Pass, r.Message = d.apparmor(pol)
		case "diskEncryption":
			r.Pass, r.Message = d.diskEncryption(pol)
		case "fileContent":
			r.Pass, r.Message = d.fileContent(pol)
		default:
			r.Message = fmt.Sprintf("unknown policy type %q", pol.Type)
		}
		if !r.Pass && pol.Mode == "enforce" && pol.Type != "fileContent" {
			r.Message += " (not enforceable by the agent; reported only)"
		}
		out[i] = r
	}
	return out
}

func (d *Driver) secureBoot(pol blueprint.Policy) (bool, string) {
	want := pol.State != "disabled"
	b, err := os.ReadFile(d.path(SecureBootVar))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return !want, "no SecureBoot EFI variable: not booted with UEFI Secure Boot"
		}
		return false, "reading SecureBoot variable: " + err.Error()
	}
	// 4 bytes of attributes, then the value.
	on := len(b) >= 5 && b[4] == 1
	if on == want {
		return true, fmt.Sprintf("Secure Boot %s", onOff(on))
	}
	return false, fmt.Sprintf("Secure Boot is %s, want %s", onOff(on), onOff(want))
}

func onOff(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

func (d *Driver) selinux(pol blueprint.Policy) (bool, string) {
	want := pol.State
	if want == "" {
		want = "enforcing"
	}
	mode := "disabled"
	if b, err := os.ReadFile(d.path("/sys/fs/selinux/enforce")); err == nil {
		mode = map[bool]string{true: "enforcing", false: "permissive"}[strings.TrimSpace(string(b)) == "1"]
	}
	if mode == want {
		return true, "SELinux " + mode
	}
	return false, fmt.Sprintf("SELinux is %s, want %s", mode, want)
}

func (d *Driver) apparmor(pol blueprint.Policy) (bool, string) {
	b, err := os.ReadFile(d.path("/sys/kernel/security/apparmor/profiles"))
	if err != nil {
		return false, "AppArmor is not enabled (no /sys/kernel/security/apparmor/profiles)"
	}
	modes := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		name, mode, ok := strings.Cut(strings.TrimSpace(l), " (")
		if ok {
			modes[name] = strings.TrimSuffix(mode, ")")
		}
	}
	var bad []string
	for _, p := range pol.Profiles {
		switch m, ok := modes[p]; {
		case !ok:
			bad = append(bad, p+" not loaded")
		case m != "enforce":
			bad = append(bad, p+" in "+m+" mode")
		}
	}
	if len(bad) > 0 {
		return false, "AppArmor: " + strings.Join(bad, ", ")
	}
	return true, fmt.Sprintf("AppArmor enabled, %d profile(s) enforced", len(pol.Profiles))
}

// diskEncryption finds each mount's device in /proc/mounts; a device-mapper
// device passes when its dm uuid says CRYPT-LUKS, or, where sysfs is not
// there to ask, when /etc/crypttab names it.
func (d *Driver) diskEncryption(pol blueprint.Policy) (bool, string) {
	mounts, err := os.ReadFile(d.path("/proc/mounts"))
	if err != nil {
		return false, "reading /proc/mounts: " + err.Error()
	}
	dev := map[string]string{}
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) >= 2 {
			dev[f[1]] = f[0]
		}
	}
	crypttab := map[string]bool{}
	if b, err := os.ReadFile(d.path("/etc/crypttab")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(f[0], "#") {
				crypttab[f[0]] = true
			}
		}
	}
	var bad []string
	for _, m := range pol.Mounts {
		dv, ok := dev[m]
		if !ok {
			bad = append(bad, m+" is not mounted")
			continue
		}
		if !d.luks(dv, crypttab) {
			bad = append(bad, fmt.Sprintf("%s is on %s, not LUKS", m, dv))
		}
	}
	if len(bad) > 0 {
		return false, strings.Join(bad, "; ")
	}
	return true, fmt.Sprintf("%d mount(s) on LUKS", len(pol.Mounts))
}

func (d *Driver) luks(dev string, crypttab map[string]bool) bool {
	name, ok := strings.CutPrefix(dev, "/dev/mapper/")
	if !ok {
		if dm, isDM := strings.CutPrefix(dev, "/dev/"); isDM && strings.HasPrefix(dm, "dm-") {
			if b, err := os.ReadFile(d.path("/sys/block/" + dm + "/dm/uuid")); err == nil {
				return strings.HasPrefix(string(b), "CRYPT-LUKS")
			}
		}
		return false
	}
	blocks, _ := filepath.Glob(d.path("/sys/block/dm-*/dm/name"))
	for _, nb := range blocks {
		if b, err := os.ReadFile(nb); err == nil && strings.TrimSpace(string(b)) == name {
			u, err := os.ReadFile(filepath.Join(filepath.Dir(nb), "uuid"))
			return err == nil && strings.HasPrefix(string(u), "CRYPT-LUKS")
		}
	}
	return crypttab[name]
}

// fileContent passes when the line's key (its first word) appears, outside
// comments, only with the wanted value. sshd and most daemons take the first
// occurrence, so a later correct line after a wrong one is not enough.
func (d *Driver) fileContent(pol blueprint.Policy) (bool, string) {
	b, err := d.readFile(pol.Path)
	if errors.Is(err, ErrOutsideRoot) {
		return false, err.Error()
	}
	if err != nil {
		return false, fmt.Sprintf("%s: %v", pol.Path, err)
	}
	key, want := lineKey(pol.Line), normLine(pol.Line)
	found := false
	for _, l := range strings.Split(string(b), "\n") {
		if lineKey(l) != key {
			continue
		}
		if normLine(l) != want {
			return false, fmt.Sprintf("%s has %q, want %q", pol.Path, strings.TrimSpace(l), want)
		}
		found = true
	}
	if !found {
		return false, fmt.Sprintf("%s lacks %q", pol.Path, want)
	}
	return true, fmt.Sprintf("%s has %q", pol.Path, want)
}

func normLine(l string) string { return strings.Join(strings.Fields(l), " ") }

// lineKey is the setting a line configures, case-insensitive as in sshd;
// empty for comments and blank lines.
func lineKey(l string) string {
	f := strings.Fields(l)
	if len(f) == 0 || strings.HasPrefix(f[0], "#") {
		return ""
	}
	return strings.ToLower(f[0])
}

// enforceLine rewrites the file: the first line setting the key becomes the
// wanted line, later ones are dropped, and the line is appended if absent.
// Comments and everything else stay as they were. Idempotent.
func (d *Driver) enforceLine(pol blueprint.Policy) error {
	root, err := d.openRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	name := strings.TrimPrefix(pol.Path, "/")
	b, err := root.ReadFile(name)
	mode := os.FileMode(0o644)
	switch {
	case err == nil:
		if fi, err := root.Stat(name); err == nil {
			mode = fi.Mode().Perm()
		}
	case errors.Is(err, os.ErrNotExist):
		if err := root.MkdirAll(path.Dir(name), 0o755); err != nil {
			return outside(pol.Path, err)
		}
	default:
		return outside(pol.Path, err)
	}
	key, want := lineKey(pol.Line), normLine(pol.Line)
	var out []string
	done := false
	lines := strings.Split(string(b), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		if lineKey(l) == key {
			if !done {
				out = append(out, want)
				done = true
			}
			continue
		}
		out = append(out, l)
	}
	if !done {
		out = append(out, want)
	}
	data := []byte(strings.Join(out, "\n") + "\n")
	if bytes.Equal(data, b) {
		return nil
	}
	if err := fileio.Rooted(root).WriteFile(pol.Path, data, mode); err != nil {
		return outside(pol.Path, err)
	}
	d.mu.Lock()
	d.passed[pol.Name] = true
	d.mu.Unlock()
	return nil
}

// Report re-checks the policies of the last plan (after enforcement) and
// gives each a resource with health 1 (passing) or 0.
func (d *Driver) Report(ctx context.Context) []driver.Resource {
	d.mu.Lock()
	pols := d.policies
	d.mu.Unlock()
	results := d.check(pols)
	d.mu.Lock()
	d.results = results
	d.mu.Unlock()
	out := make([]driver.Resource, len(results))
	for i, r := range results {
		out[i] = driver.Resource{ID: ResourceID(r.Policy), State: "fail", Message: r.Mode + ": " + r.Message}
		if r.Pass {
			out[i].State, out[i].Health = "pass", 1
		}
	}
	return out
}

// Results returns the last results, in blueprint order.
func (d *Driver) Results() []Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]Result(nil), d.results...)
}

// Export writes compliance's piece of the node's status: the fraction of
// policies passing, once there are policies.
func (d *Driver) Export(ns *streams.NodeStatus) {
	if score, n := d.Score(); n > 0 {
		ns.Compliance = &score
	}
}

// Score is the fraction of policies passing (1 with no policies) and how
// many policies there are: the node's compliance score for telemetry.
func (d *Driver) Score() (float64, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Score(d.results), len(d.results)
}

// Score is the fraction of results passing; 1 when there are none.
func Score(rs []Result) float64 {
	if len(rs) == 0 {
		return 1
	}
	pass := 0
	for _, r := range rs {
		if r.Pass {
			pass++
		}
	}
	return float64(pass) / float64(len(rs))
}

// Watch re-checks the enforced fileContent policies every PollInterval and
// asks for a reconcile when one that passed starts failing (an edit by
// hand), so enforcement does not wait for the engine's periodic resync. A
// policy that keeps failing (a read-only file) is reported once, not on
// every tick.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	return driver.Poll(ctx, PollInterval, func(context.Context) {
		d.mu.Lock()
		pols := d.policies
		d.mu.Unlock()
		for _, pol := range pols {
			if pol.Type != "fileContent" || pol.Mode != "enforce" {
				continue
			}
			ok, _ := d.fileContent(pol)
			d.mu.Lock()
			was, seen := d.passed[pol.Name]
			d.passed[pol.Name] = ok
			d.mu.Unlock()
			if !ok && (was || !seen) {
				notify("compliance: " + pol.Name + " no longer holds")
			}
		}
	})
}
