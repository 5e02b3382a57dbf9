package files

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func newDriver(t *testing.T) (*Driver, string) {
	t.Helper()
	root := t.TempDir()
	d, err := New(driver.Env{Root: root, StateDir: t.TempDir()})
	check.NoError(t, err)
	return d, root
}

func bp(files ...blueprint.File) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "t"
	b.Spec.Files = files
	return b
}

func apply(t *testing.T, d *Driver, b *blueprint.Blueprint) driver.Plan {
	t.Helper()
	p, err := d.Plan(context.Background(), b)
	check.NoError(t, err)
	for _, c := range p {
		check.NoError(t, c.Apply(context.Background()))
	}
	return p
}

func TestCreateUpdateDelete(t *testing.T) {
	d, root := newDriver(t)
	f := blueprint.File{Path: "/etc/app/conf.d/a.conf", Content: "a=1\n", Mode: "0600"}
	p := apply(t, d, bp(f))
	check.Equal(t, len(p), 1)
	check.Equal(t, p[0].Op, driver.Create)
	got, err := os.ReadFile(filepath.Join(root, "etc/app/conf.d/a.conf"))
	check.NoError(t, err)
	check.Equal(t, string(got), "a=1\n")
	fi, _ := os.Stat(filepath.Join(root, "etc/app/conf.d/a.conf"))
	check.Equal(t, fi.Mode().Perm(), os.FileMode(0o600))

	// Idempotent: a second plan is empty.
	p = apply(t, d, bp(f))
	check.Equal(t, len(p), 0)

	f.Content = "a=2\n"
	p = apply(t, d, bp(f))
	check.Equal(t, p.String(), "update file:/etc/app/conf.d/a.conf (content differs)")

	// Leaving the blueprint removes the file and the directories we made.
	apply(t, d, bp())
	if _, err := os.Stat(filepath.Join(root, "etc")); !os.IsNotExist(err) {
		t.Fatalf("etc should be gone, stat says %v", err)
	}
}

func TestPreexistingFileIsNotRemoved(t *testing.T) {
	d, root := newDriver(t)
	check.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(root, "etc/keep"), []byte("mine"), 0o644))
	apply(t, d, bp(blueprint.File{Path: "/etc/keep", Content: "managed"}))
	apply(t, d, bp())
	got, err := os.ReadFile(filepath.Join(root, "etc/keep"))
	check.NoError(t, err)
	check.Equal(t, string(got), "managed")
}

func TestOwnershipSurvivesRestart(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	d, err := New(driver.Env{Root: root, StateDir: state})
	check.NoError(t, err)
	apply(t, d, bp(blueprint.File{Path: "/x", Content: "1"}))
	d2, err := New(driver.Env{Root: root, StateDir: state})
	check.NoError(t, err)
	apply(t, d2, bp())
	if _, err := os.Stat(filepath.Join(root, "x")); !os.IsNotExist(err) {
		t.Fatal("file created before restart was not removed")
	}
}

func TestSymlinkCannotEscapeRoot(t *testing.T) {
	d, root := newDriver(t)
	outside := t.TempDir()
	check.NoError(t, os.Symlink(outside, filepath.Join(root, "etc")))
	p, err := d.Plan(context.Background(), bp(blueprint.File{Path: "/etc/evil", Content: "x"}))
	check.NoError(t, err)
	if err := p[0].Apply(context.Background()); err == nil {
		t.Fatal("write through a symlink leaving the root succeeded")
	}
	if _, err := os.Stat(filepath.Join(outside, "evil")); !os.IsNotExist(err) {
		t.Fatal("file written outside the root")
	}
}

func TestDiffIsPure(t *testing.T) {
	w := map[string]want{"/a": {spec: blueprint.File{Path: "/a", Content: "x"}, mode: 0o644, uid: -1, gid: -1}}
	o := map[string]observed{"/a": {exists: true, isFile: true, content: []byte("x"), mode: 0o600}, "/old": {exists: true}}
	got := diff(w, o, map[string]bool{"/old": true})
	check.Equal(t, len(got), 2)
	check.Equal(t, got[0].detail, "mode 0600, want 0644")
	check.Equal(t, got[1].op, driver.Delete)
}

func TestWatchSeesHandEdits(t *testing.T) {
	d, root := newDriver(t)
	apply(t, d, bp(blueprint.File{Path: "/etc/w.conf", Content: "1"}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hits := make(chan string, 16)
	go d.Watch(ctx, func(r string) { hits <- r })
	// The watch set is registered asynchronously; poke until an event arrives.
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		os.WriteFile(filepath.Join(root, "etc/w.conf"), []byte("hand edit"), 0o644)
		select {
		case <-hits:
			return nil
		default:
			return os.ErrNotExist
		}
	})
}
