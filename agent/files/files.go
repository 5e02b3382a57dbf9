// Package files is the agent driver for spec.files: content, mode and
// ownership of files under the agent's root, directories created as needed,
// and removal of the files it created once they leave the blueprint.
package files

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
)

// Driver manages spec.files. Plan may be called any number of times with the
// same blueprint; applying its changes twice is harmless.
type Driver struct {
	env  driver.Env
	root *os.Root

	mu      sync.Mutex
	owned   ownership // what this driver created, persisted
	watched []string  // absolute paths of managed files, for the watcher
	changed chan struct{}
}

var _ driver.Driver = (*Driver)(nil)
var _ driver.Watcher = (*Driver)(nil)

// ownership is the files and directories the driver created itself. Only
// those are ever removed: a file that existed before the blueprint named it
// is left in place when it leaves the blueprint.
type ownership struct {
	Files map[string]bool `json:"files"`
	Dirs  map[string]bool `json:"dirs"`
}

// New opens the root (creating it) and loads what the driver owns.
func New(env driver.Env) (*Driver, error) {
	if env.Root == "" {
		env.Root = "/"
	}
	if env.Log == nil {
		env.Log = slog.Default()
	}
	if err := os.MkdirAll(env.Root, 0o755); err != nil {
		return nil, fmt.Errorf("files: root %q: %w", env.Root, err)
	}
	root, err := os.OpenRoot(env.Root)
	if err != nil {
		return nil, fmt.Errorf("files: root %q: %w", env.Root, err)
	}
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("files: state dir: %w", err)
	}
	d := &Driver{env: env, root: root, changed: make(chan struct{}, 1),
		owned: ownership{Files: map[string]bool{}, Dirs: map[string]bool{}}}
	b, err := os.ReadFile(d.ownedPath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &d.owned); err != nil {
			return nil, fmt.Errorf("files: %s: %w", d.ownedPath(), err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	return d, nil
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "files" }

func (d *Driver) ownedPath() string { return filepath.Join(d.env.StateDir, "owned.json") }

// observed is one file as found on disk.
type observed struct {
	exists  bool
	isFile  bool
	content []byte
	mode    uint32
	uid     int
	gid     int
}

// want is one file as the blueprint wants it, resolved.
type want struct {
	spec     blueprint.File
	mode     uint32
	uid, gid int // -1: leave as is
}

// Plan observes every desired and owned file and returns the changes.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	wants := map[string]want{}
	var problems []string
	for _, f := range bp.Spec.Files {
		w, err := resolve(f)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		wants[f.Path] = w
	}
	obs := map[string]observed{}
	for p := range wants {
		obs[p] = d.observe(p)
	}
	d.mu.Lock()
	owned := make(map[string]bool, len(d.owned.Files))
	for p := range d.owned.Files {
		owned[p] = true
		if _, ok := obs[p]; !ok {
			obs[p] = d.observe(p)
		}
	}
	d.watched = d.watched[:0]
	for p := range wants {
		d.watched = append(d.watched, p)
	}
	d.mu.Unlock()
	d.notifyWatchSet()

	var plan driver.Plan
	for _, c := range diff(wants, obs, owned) {
		plan = append(plan, d.bind(c, wants[c.path]))
	}
	if len(problems) > 0 {
		return plan, errors.New(strings.Join(problems, "; "))
	}
	return plan, nil
}

func resolve(f blueprint.File) (want, error) {
	w := want{spec: f, uid: -1, gid: -1}
	mode, err := blueprint.ParseMode(f.Mode, 0o644)
	if err != nil {
		return w, fmt.Errorf("%s: mode: %w", f.Path, err)
	}
	w.mode = mode
	if f.Owner != "" {
		if w.uid, err = lookupID(f.Owner, true); err != nil {
			return w, fmt.Errorf("%s: owner %q: %w", f.Path, f.Owner, err)
		}
	}
	if f.Group != "" {
		if w.gid, err = lookupID(f.Group, false); err != nil {
			return w, fmt.Errorf("%s: group %q: %w", f.Path, f.Group, err)
		}
	}
	return w, nil
}

func lookupID(name string, isUser bool) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	if isUser {
		u, err := user.Lookup(name)
		if err != nil {
			return -1, err
		}
		return strconv.Atoi(u.Uid)
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

func rel(p string) string { return strings.TrimPrefix(p, "/") }

func (d *Driver) observe(p string) observed {
	fi, err := d.root.Lstat(rel(p))
	if err != nil {
		return observed{}
	}
	o := observed{exists: true, isFile: fi.Mode().IsRegular(), mode: uint32(fi.Mode().Perm())}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		o.uid, o.gid = int(st.Uid), int(st.Gid)
	}
	if o.isFile {
		o.content, _ = d.root.ReadFile(rel(p))
	}
	return o
}

// change is a pure description of what to do with one path.
type change struct {
	path   string
	op     driver.Op
	detail string
}

// diff compares desired and observed files; it does no I/O.
func diff(wants map[string]want, obs map[string]observed, owned map[string]bool) []change {
	var out []change
	for p, w := range wants {
		o := obs[p]
		var why []string
		switch {
		case !o.exists:
			out = append(out, change{p, driver.Create, "missing"})
			continue
		case !o.isFile:
			why = append(why, "not a regular file")
		default:
			if !bytes.Equal(o.content, []byte(w.spec.Content)) {
				why = append(why, "content differs")
			}
			if o.mode != w.mode {
				why = append(why, fmt.Sprintf("mode %04o, want %04o", o.mode, w.mode))
			}
			if w.uid >= 0 && o.uid != w.uid {
				why = append(why, fmt.Sprintf("uid %d, want %d", o.uid, w.uid))
			}
			if w.gid >= 0 && o.gid != w.gid {
				why = append(why, fmt.Sprintf("gid %d, want %d", o.gid, w.gid))
			}
		}
		if len(why) > 0 {
			out = append(out, change{p, driver.Update, strings.Join(why, ", ")})
		}
	}
	for p := range owned {
		if _, ok := wants[p]; !ok {
			detail := "left the blueprint"
			if !obs[p].exists {
				detail = "left the blueprint; already gone"
			}
			out = append(out, change{p, driver.Delete, detail})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

func (d *Driver) bind(c change, w want) driver.Change {
	id := blueprint.ResourceID("file", c.path)
	if c.op == driver.Delete {
		return driver.NewChange(id, c.op, c.detail, func(context.Context) error { return d.remove(c.path) })
	}
	ch := driver.NewChange(id, c.op, c.detail, func(context.Context) error { return d.write(w) })
	return ch
}

// write puts the file in place atomically and durably (fileio). Parent
// directories are created as needed and remembered, so they can be removed
// again when empty.
func (d *Driver) write(w want) error {
	p := w.spec.Path
	dir := path.Dir(p)
	if err := d.mkdirs(dir); err != nil {
		return err
	}
	_, statErr := d.root.Lstat(rel(p))
	existed := statErr == nil
	// Through the root: a symlink planted under it cannot lead the write
	// out, and one at p itself is replaced, not followed.
	err := fileio.Rooted(d.root).WriteFile(p, []byte(w.spec.Content), fs.FileMode(w.mode), fileio.Owner(w.uid, w.gid))
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !existed && !d.owned.Files[p] {
		d.owned.Files[p] = true
		return d.saveOwned()
	}
	return nil
}

// Put makes the file at the absolute path p under the directory rootDir
// hold content, creating missing parents 0755, or removes it when content is
// empty. It writes through fileio's Writer rooted at rootDir, so a symlink
// planted under it leads no write out (os.Root refuses with "path escapes
// from parent"). It is for drivers that own one fixed file under the agent's
// root (the modprobe.d and sysctl.d drop-ins).
func Put(rootDir, p string, content []byte, mode fs.FileMode) error {
	root, err := os.OpenRoot(rootDir)
	if err != nil {
		return err
	}
	defer root.Close()
	w := fileio.Rooted(root)
	if len(content) == 0 {
		err = w.Remove(p)
	} else {
		err = w.WriteFile(p, content, mode, fileio.MkdirAll(0o755))
	}
	if err != nil {
		return fmt.Errorf("files: %s under %s: %w", p, rootDir, err)
	}
	return nil
}

func (d *Driver) mkdirs(dir string) error {
	var missing []string
	for p := dir; p != "/" && p != "."; p = path.Dir(p) {
		if _, err := d.root.Lstat(rel(p)); err == nil {
			break
		}
		missing = append(missing, p)
	}
	if len(missing) == 0 {
		return nil
	}
	if err := d.root.MkdirAll(rel(dir), 0o755); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range missing {
		d.owned.Dirs[p] = true
	}
	return d.saveOwned()
}

// remove deletes a file the driver created, then any directories it created
// that are now empty.
func (d *Driver) remove(p string) error {
	if err := fileio.Rooted(d.root).Remove(p); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.owned.Files, p)
	for dir := path.Dir(p); d.owned.Dirs[dir]; dir = path.Dir(dir) {
		if err := d.root.Remove(rel(dir)); err != nil {
			break // not empty, or someone else's: keep it
		}
		delete(d.owned.Dirs, dir)
	}
	return d.saveOwned()
}

func (d *Driver) saveOwned() error {
	b, err := json.Marshal(d.owned)
	if err != nil {
		return err
	}
	return fileio.WriteFile(d.ownedPath(), b, 0o600)
}
