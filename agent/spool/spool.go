// Package spool keeps a publisher's not-yet-acknowledged messages in a file,
// so an agent that restarts (or crashes) while its site leaf is unreachable
// sends them after the restart instead of losing them.
package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alpha-edge/alpha/internal/fileio"
)

// Every is how often a changed queue is written: the most a crash can lose
// of what was queued just before it.
const Every = time.Second

// File is one publisher's spool. Snapshot returns what is to be kept (final
// is true for the write after the publisher stopped, which may keep more)
// and whether that is nothing, which removes the file.
type File[T any] struct {
	Path     string
	Snapshot func(final bool) (v T, empty bool)
	Log      *slog.Logger

	mu    sync.Mutex // one write at a time
	dirty atomic.Bool
	once  sync.Once
	kick  chan struct{} // wakes Run: an idle spool costs no timer wakeups
}

func (f *File[T]) kicks() chan struct{} {
	f.once.Do(func() { f.kick = make(chan struct{}, 1) })
	return f.kick
}

func (f *File[T]) wake() {
	select {
	case f.kicks() <- struct{}{}:
	default:
	}
}

// Load reads the spool; ok is false when there is none.
func (f *File[T]) Load() (v T, ok bool, err error) {
	data, err := os.ReadFile(f.Path)
	if errors.Is(err, os.ErrNotExist) {
		return v, false, nil
	}
	if err != nil {
		return v, false, err
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return v, false, fmt.Errorf("spool %s: %w", f.Path, err)
	}
	f.Changed() // rewrite once what was loaded is acked
	return v, true, nil
}

// Changed marks the queue changed; Run writes it within Every.
func (f *File[T]) Changed() {
	f.dirty.Store(true)
	f.wake()
}

// Run writes the spool within Every of a change (changes in that second
// are written together), until ctx is done. The owner calls Write(true)
// after its own send loop has stopped.
func (f *File[T]) Run(ctx context.Context) {
	kick := f.kicks()
	for {
		select {
		case <-ctx.Done():
			return
		case <-kick:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(Every):
		}
		if f.dirty.Swap(false) {
			f.Write(false)
		}
	}
}

// Write writes the snapshot now (atomically: a crash mid-write keeps the
// previous spool).
func (f *File[T]) Write(final bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, empty := f.Snapshot(final)
	if empty {
		if err := fileio.Remove(f.Path); err != nil {
			f.fail(err)
		}
		return
	}
	data, err := json.Marshal(v)
	if err == nil {
		err = fileio.WriteFile(f.Path, data, 0o600)
	}
	if err != nil {
		f.fail(err)
	}
}

func (f *File[T]) fail(err error) {
	f.Changed() // try again in a second
	if f.Log != nil {
		f.Log.Warn("spool not written", "file", f.Path, "err", err)
	}
}
