// Package throttle spaces out drift notifications per resource, so a
// crash-looping workload is retried with growing pauses instead of in a
// tight loop, while a single change by hand is reported at once.
package throttle

import (
	"sync"
	"time"
)

// Throttle forwards events per key: the first at once, repeats within Quiet
// after a pause that doubles from Min up to Max.
type Throttle struct {
	Min, Max, Quiet time.Duration

	mu   sync.Mutex
	keys map[string]*state
}

type state struct {
	last    time.Time
	pause   time.Duration
	pending bool
}

// New returns a throttle with the given bounds.
func New(min, max, quiet time.Duration) *Throttle {
	return &Throttle{Min: min, Max: max, Quiet: quiet, keys: map[string]*state{}}
}

// Do calls fn for key now, or later if key fired recently; calls that arrive
// while one is pending are merged into it.
func (t *Throttle) Do(key string, fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.keys[key]
	now := time.Now()
	if s == nil || now.Sub(s.last) > t.Quiet {
		t.keys[key] = &state{last: now}
		go fn()
		return
	}
	if s.pending {
		return
	}
	if s.pause == 0 {
		s.pause = t.Min
	} else {
		s.pause = min(2*s.pause, t.Max)
	}
	wait := max(0, s.pause-now.Sub(s.last))
	s.pending = true
	time.AfterFunc(wait, func() {
		t.mu.Lock()
		s.pending = false
		s.last = time.Now()
		t.mu.Unlock()
		fn()
	})
}
