package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// A changed queue is on disk within Every; an empty one removes the file;
// Load reads back what was written.
func TestWriteLoadRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.json")
	var mu sync.Mutex
	queue := []string{"a", "b"}
	f := &File[[]string]{Path: path, Snapshot: func(bool) ([]string, bool) {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), queue...), len(queue) == 0
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	f.Changed()
	check.For(t, 3*Every, 10*time.Millisecond, func() error {
		g := &File[[]string]{Path: path}
		got, ok, err := g.Load()
		if err != nil || !ok {
			return fmt.Errorf("not loaded: ok=%v err=%v", ok, err)
		}
		if fmt.Sprint(got) != "[a b]" {
			return fmt.Errorf("spool holds %v", got)
		}
		return nil
	})
	info, err := os.Stat(path)
	check.NoError(t, err)
	check.Equal(t, info.Mode().Perm(), os.FileMode(0o600))

	mu.Lock()
	queue = nil
	mu.Unlock()
	f.Changed()
	check.For(t, 3*Every, 10*time.Millisecond, func() error {
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("empty queue, spool still there: %v", err)
		}
		return nil
	})
	_, ok, err := (&File[[]string]{Path: path}).Load()
	check.NoError(t, err)
	check.Equal(t, ok, false)
}

// A spool that cannot be written is retried at the next tick.
func TestWriteFailureRetried(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "missing", "q.json")
	f := &File[[]string]{Path: path, Snapshot: func(bool) ([]string, bool) { return []string{"x"}, false }}
	f.Write(false)
	if !f.dirty.Load() {
		t.Fatal("a failed write must leave the spool marked changed")
	}
	check.NoError(t, os.MkdirAll(filepath.Dir(path), 0o700))
	f.dirty.Store(false)
	f.Write(false)
	if f.dirty.Load() {
		t.Fatal("a good write must not leave the spool marked changed")
	}
	_, err := os.Stat(path)
	check.NoError(t, err)
}
