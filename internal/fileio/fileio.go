// Package fileio writes files durably: each write goes to a temporary file in
// the target's directory, is synced, renamed over the target, and the
// directory is synced, so a crash at any point leaves the old content or the
// new one, whole, and a write that returned survives a power cut.
//
// Every temp-file-and-rename write in the repository goes through here; a
// state file torn by a crash (the signed-blueprint replay state, a driver's
// record of what it owns) can stop the agent from starting.
package fileio

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Writer writes and removes files durably. The zero Writer takes paths as
// the operating system does. One made by Rooted resolves every path inside
// an os.Root, so neither ".." nor a symlink planted under the root can lead
// a write or a removal out of it (os.Root refuses with "path escapes from
// parent"); a symlink at the target itself is replaced, not followed.
// A Writer is safe for concurrent use; two writes of the same file race
// only in which one lands last.
type Writer struct {
	root *os.Root
}

// Rooted returns a Writer confined to root. Its paths are slash-separated
// and read from the root: "/etc/x" and "etc/x" both name root's etc/x.
// root must stay open while the Writer is used.
func Rooted(root *os.Root) Writer { return Writer{root: root} }

// WriteFile is WriteFile of the zero Writer.
func WriteFile(name string, data []byte, mode fs.FileMode, opts ...Option) error {
	return Writer{}.WriteFile(name, data, mode, opts...)
}

// Create is Create of the zero Writer.
func Create(name string, mode fs.FileMode, opts ...Option) (*Pending, error) {
	return Writer{}.Create(name, mode, opts...)
}

// Remove is Remove of the zero Writer.
func Remove(name string) error { return Writer{}.Remove(name) }

// Option adjusts one write.
type Option func(*options)

type options struct {
	uid, gid int
	dirMode  fs.FileMode // 0: the parent must exist
}

// Owner gives the file to uid and gid; -1 leaves that id as the writer's.
func Owner(uid, gid int) Option { return func(o *options) { o.uid, o.gid = uid, gid } }

// MkdirAll creates missing parent directories with perm (before umask).
func MkdirAll(perm fs.FileMode) Option { return func(o *options) { o.dirMode = perm } }

// WriteFile replaces name with data, mode applied exactly (no umask). On
// error the old content, if any, is still in place.
func (w Writer) WriteFile(name string, data []byte, mode fs.FileMode, opts ...Option) error {
	p, err := w.Create(name, mode, opts...)
	if err != nil {
		return err
	}
	if _, err := p.Write(data); err != nil {
		p.Discard()
		return err
	}
	return p.Commit()
}

// Create starts a durable write of name: the caller writes to the returned
// Pending, then Commits it, or Discards it to leave name as it was (the
// artifact cache discards a download whose checksum is wrong). Use it when
// the content is streamed rather than held in memory.
func (w Writer) Create(name string, mode fs.FileMode, opts ...Option) (*Pending, error) {
	o := options{uid: -1, gid: -1}
	for _, opt := range opts {
		opt(&o)
	}
	name = w.clean(name)
	dir, base := w.split(name)
	if o.dirMode != 0 {
		if err := w.mkdirAll(dir, o.dirMode); err != nil {
			return nil, fmt.Errorf("fileio: creating %s: %w", dir, err)
		}
	}
	// The temp name ends in .tmp so directories read by suffix (sysctl.d,
	// modprobe.d, systemd units) ignore one a crash left behind.
	var f *os.File
	var tmp string
	var err error
	for range 100 {
		tmp = w.join(dir, "."+base+"."+strconv.FormatUint(uint64(rand.Uint32()), 36)+".tmp")
		f, err = w.openFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("fileio: writing %s: %w", name, err)
	}
	return &Pending{w: w, f: f, tmp: tmp, name: name, dir: dir, mode: mode, o: o}, nil
}

// Pending is a write in progress; nothing is visible at its name until
// Commit.
type Pending struct {
	w         Writer
	f         *os.File
	tmp, name string
	dir       string
	mode      fs.FileMode
	o         options
	done      bool
}

// Write appends b to the new content.
func (p *Pending) Write(b []byte) (int, error) { return p.f.Write(b) }

// Commit sets mode and owner, syncs the file, renames it over the target and
// syncs the directory. After an error the target holds its old content,
// except when only the final directory sync failed (the error says so).
func (p *Pending) Commit() error {
	if p.done {
		return fmt.Errorf("fileio: %s: already committed or discarded", p.name)
	}
	p.done = true
	err := p.f.Chmod(p.mode)
	if err == nil && (p.o.uid >= 0 || p.o.gid >= 0) {
		err = p.f.Chown(p.o.uid, p.o.gid)
	}
	if err == nil {
		err = p.f.Sync()
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		hook("written")
		// The one rename of the repository's durable writes.
		err = p.w.rename(p.tmp, p.name)
	}
	if err != nil {
		p.w.remove(p.tmp)
		return fmt.Errorf("fileio: writing %s: %w", p.name, err)
	}
	hook("renamed")
	if err := p.w.syncDir(p.dir); err != nil {
		return fmt.Errorf("fileio: writing %s: syncing its directory: %w", p.name, err)
	}
	return nil
}

// Discard drops the write, leaving the target as it was. It does nothing
// after Commit, so `defer p.Discard()` is safe.
func (p *Pending) Discard() {
	if p.done {
		return
	}
	p.done = true
	p.f.Close()
	p.w.remove(p.tmp)
}

// Remove deletes name, if it exists, and syncs its directory so the removal
// survives a crash. A missing file is not an error.
func (w Writer) Remove(name string) error {
	name = w.clean(name)
	err := w.remove(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		dir, _ := w.split(name)
		err = w.syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("fileio: removing %s: %w", name, err)
	}
	return nil
}

// hook lets the crash test stop a write between its steps.
var testHook func(stage string)

func hook(stage string) {
	if testHook != nil {
		testHook(stage)
	}
}

// clean makes a rooted path relative to the root (os.Root takes no
// absolute names); "/" and "" become the root itself.
func (w Writer) clean(name string) string {
	if w.root == nil {
		return name
	}
	name = strings.TrimLeft(name, "/")
	if name == "" {
		return "."
	}
	return name
}

func (w Writer) split(name string) (dir, base string) {
	if w.root == nil {
		return filepath.Dir(name), filepath.Base(name)
	}
	return path.Dir(name), path.Base(name)
}

func (w Writer) join(dir, base string) string {
	if w.root == nil {
		return filepath.Join(dir, base)
	}
	return path.Join(dir, base)
}

func (w Writer) openFile(name string, flag int, perm fs.FileMode) (*os.File, error) {
	if w.root == nil {
		return os.OpenFile(name, flag, perm)
	}
	return w.root.OpenFile(name, flag, perm)
}

func (w Writer) rename(from, to string) error {
	if w.root == nil {
		return os.Rename(from, to)
	}
	return w.root.Rename(from, to)
}

func (w Writer) remove(name string) error {
	if w.root == nil {
		return os.Remove(name)
	}
	return w.root.Remove(name)
}

func (w Writer) mkdirAll(dir string, perm fs.FileMode) error {
	if w.root == nil {
		return os.MkdirAll(dir, perm)
	}
	return w.root.MkdirAll(dir, perm)
}

// syncDir makes a rename or removal in dir durable: the file's own fsync
// does not cover the directory entry that names it.
func (w Writer) syncDir(dir string) error {
	var d *os.File
	var err error
	if w.root == nil {
		d, err = os.Open(dir)
	} else {
		d, err = w.root.Open(dir)
	}
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
