package fileio

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// names lists dir's entries, so a test sees a temp file left behind.
func names(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	check.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	check.NoError(t, err)
	return string(b)
}

func perm(t *testing.T, p string) fs.FileMode {
	t.Helper()
	fi, err := os.Lstat(p)
	check.NoError(t, err)
	return fi.Mode()
}

func TestWriteFileModesIgnoreUmask(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, mode := range []fs.FileMode{0o600, 0o644, 0o666, 0o755, 0o400} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "f")
			check.NoError(t, WriteFile(p, []byte("x"), mode))
			check.Equal(t, perm(t, p), mode)
			check.Equal(t, readFile(t, p), "x")
			check.Equal(t, names(t, dir), "f")
		})
	}
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	check.NoError(t, WriteFile(p, []byte("old content, longer than the new"), 0o644))
	check.NoError(t, WriteFile(p, []byte("new"), 0o600))
	check.Equal(t, readFile(t, p), "new")
	check.Equal(t, perm(t, p), 0o600)
	check.Equal(t, names(t, dir), "state.json")
}

func TestWriteFileNeedsParentUnlessMkdirAll(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a", "b", "f")
	if err := WriteFile(p, []byte("x"), 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("writing under a missing directory: got %v, want ErrNotExist", err)
	}
	check.NoError(t, WriteFile(p, []byte("x"), 0o600, MkdirAll(0o750)))
	check.Equal(t, readFile(t, p), "x")
	check.Equal(t, perm(t, filepath.Join(dir, "a", "b")), fs.ModeDir|0o750)
}

func TestOwner(t *testing.T) {
	check.NeedRoot(t)
	p := filepath.Join(t.TempDir(), "f")
	check.NoError(t, WriteFile(p, []byte("x"), 0o640, Owner(1234, 5678)))
	fi, err := os.Stat(p)
	check.NoError(t, err)
	st := fi.Sys().(*syscall.Stat_t)
	check.Equal(t, [2]uint32{st.Uid, st.Gid}, [2]uint32{1234, 5678})
	// -1 keeps the other id: only the group changes.
	check.NoError(t, WriteFile(p, []byte("y"), 0o640, Owner(-1, 42)))
	fi, err = os.Stat(p)
	check.NoError(t, err)
	st = fi.Sys().(*syscall.Stat_t)
	check.Equal(t, [2]uint32{st.Uid, st.Gid}, [2]uint32{0, 42})
	// The files driver gives owners through a rooted Writer.
	w, rootDir, _ := rooted(t)
	check.NoError(t, w.WriteFile("/etc/owned", []byte("x"), 0o600, Owner(7, 8)))
	fi, err = os.Stat(filepath.Join(rootDir, "etc", "owned"))
	check.NoError(t, err)
	st = fi.Sys().(*syscall.Stat_t)
	check.Equal(t, [2]uint32{st.Uid, st.Gid}, [2]uint32{7, 8})
}

// Two writers of one file (a driver's state saved from two goroutines)
// each get their own temp file: the result is one of them, whole.
func TestConcurrentWritesLeaveOneWhole(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.json")
	a, b := strings.Repeat("a", 1<<20), strings.Repeat("b", 1<<19)
	errs := make(chan error, 40)
	for i := range 40 {
		go func() {
			data := a
			if i%2 == 1 {
				data = b
			}
			errs <- WriteFile(p, []byte(data), 0o600)
		}()
	}
	for range 40 {
		check.NoError(t, <-errs)
	}
	if got := readFile(t, p); got != a && got != b {
		t.Fatalf("%s holds %d bytes, neither writer's content", p, len(got))
	}
	check.Equal(t, names(t, dir), "state.json")
}

func TestRemove(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	check.NoError(t, WriteFile(p, []byte("x"), 0o600))
	check.NoError(t, Remove(p))
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s after Remove: %v", p, err)
	}
	check.NoError(t, Remove(p)) // missing is fine
}

func TestDiscardLeavesTheOldContent(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "artifact")
	check.NoError(t, WriteFile(p, []byte("old"), 0o600))
	pw, err := Create(p, 0o600)
	check.NoError(t, err)
	_, err = pw.Write([]byte("a download with the wrong checksum"))
	check.NoError(t, err)
	pw.Discard()
	pw.Discard() // twice is harmless
	check.Equal(t, readFile(t, p), "old")
	check.Equal(t, names(t, dir), "artifact")
	if err := pw.Commit(); err == nil {
		t.Fatal("Commit after Discard succeeded")
	}
	check.Equal(t, readFile(t, p), "old")
}

// rooted makes root/ with a file outside it and returns the Writer, the
// root directory and the outside directory.
func rooted(t *testing.T) (Writer, string, string) {
	t.Helper()
	top := t.TempDir()
	rootDir, outside := filepath.Join(top, "root"), filepath.Join(top, "outside")
	check.NoError(t, os.MkdirAll(filepath.Join(rootDir, "etc"), 0o755))
	check.NoError(t, os.MkdirAll(outside, 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(outside, "passwd"), []byte("outside"), 0o644))
	r, err := os.OpenRoot(rootDir)
	check.NoError(t, err)
	t.Cleanup(func() { r.Close() })
	return Rooted(r), rootDir, outside
}

func TestRootedWritesInsideTheRoot(t *testing.T) {
	w, rootDir, _ := rooted(t)
	check.NoError(t, w.WriteFile("/etc/a.conf", []byte("a"), 0o644))
	check.NoError(t, w.WriteFile("etc/b.conf", []byte("b"), 0o644))
	check.NoError(t, w.WriteFile("/etc/sysctl.d/c.conf", []byte("c"), 0o644, MkdirAll(0o755)))
	check.Equal(t, readFile(t, filepath.Join(rootDir, "etc/a.conf")), "a")
	check.Equal(t, readFile(t, filepath.Join(rootDir, "etc/b.conf")), "b")
	check.Equal(t, readFile(t, filepath.Join(rootDir, "etc/sysctl.d/c.conf")), "c")
	check.NoError(t, w.Remove("/etc/a.conf"))
	check.Equal(t, names(t, filepath.Join(rootDir, "etc")), "b.conf sysctl.d")
}

func TestRootedRefusesEscapes(t *testing.T) {
	w, rootDir, outside := rooted(t)
	// etc/evil is a directory symlink out of the root; etc/passwd a file
	// symlink to a file outside.
	check.NoError(t, os.Symlink(outside, filepath.Join(rootDir, "etc", "evil")))
	check.NoError(t, os.Symlink(filepath.Join(outside, "passwd"), filepath.Join(rootDir, "etc", "passwd")))
	for _, name := range []string{"../outside/passwd", "/../outside/new", "etc/../../outside/passwd", "/etc/evil/passwd", "/etc/evil/new"} {
		t.Run(name, func(t *testing.T) {
			if err := w.WriteFile(name, []byte("pwned"), 0o644); err == nil {
				t.Fatalf("WriteFile(%q) escaped the root", name)
			}
			if err := w.WriteFile(name, []byte("pwned"), 0o644, MkdirAll(0o755)); err == nil {
				t.Fatalf("WriteFile(%q, MkdirAll) escaped the root", name)
			}
			if err := w.Remove(name); err == nil {
				t.Fatalf("Remove(%q) escaped the root", name)
			}
			check.Equal(t, readFile(t, filepath.Join(outside, "passwd")), "outside")
			check.Equal(t, names(t, outside), "passwd")
		})
	}
	// A symlink at the target itself is replaced, never followed.
	check.NoError(t, w.WriteFile("/etc/passwd", []byte("inside"), 0o644))
	check.Equal(t, perm(t, filepath.Join(rootDir, "etc", "passwd")), 0o644)
	check.Equal(t, readFile(t, filepath.Join(rootDir, "etc", "passwd")), "inside")
	check.Equal(t, readFile(t, filepath.Join(outside, "passwd")), "outside")
}
