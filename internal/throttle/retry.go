package throttle

import (
	"sync"
	"time"
)

// Retry spaces out repeated restarts of one resource: the first restart is
// allowed at once (a stop by hand is repaired immediately), the next ones
// wait Min, 2*Min, ... up to Max. A resource that stays up for Reset after a
// restart starts over.
type Retry struct {
	Min, Max, Reset time.Duration

	mu     sync.Mutex
	m      map[string]*retry
	notify func(reason string)  // SetNotify's: wakes the engine after a backoff
	wakes  map[string]time.Time // wake-ups scheduled, one per key and time
}

type retry struct {
	n    int
	last time.Time
}

// NewRetry returns a Retry with the given bounds.
func NewRetry(min, max, reset time.Duration) *Retry {
	return &Retry{Min: min, Max: max, Reset: reset, m: map[string]*retry{}, wakes: map[string]time.Time{}}
}

// SetNotify is how WakeAt wakes the engine (a driver's Watch hands it over).
func (r *Retry) SetNotify(notify func(reason string)) {
	r.mu.Lock()
	r.notify = notify
	r.mu.Unlock()
}

// WakeAt asks for one notify at `at`, when key's backoff is over, so the
// engine makes a pass then; the same key and time are scheduled once.
func (r *Retry) WakeAt(key string, at time.Time, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.notify == nil || r.wakes[key].Equal(at) {
		return
	}
	r.wakes[key] = at
	notify := r.notify
	time.AfterFunc(time.Until(at), func() { notify(reason) })
}

// Next returns when key may be restarted; a zero time means now.
func (r *Retry) Next(key string) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.m[key]
	if s == nil || s.n == 0 {
		return time.Time{}
	}
	wait := r.Min
	for i := 1; i < s.n && wait < r.Max; i++ {
		wait *= 2
	}
	return s.last.Add(min(wait, r.Max))
}

// Restarted records a restart of key at now.
func (r *Retry) Restarted(key string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.m[key]
	if s == nil {
		s = &retry{}
		r.m[key] = s
	}
	s.n++
	s.last = now
}

// Up records that key was seen running at now; long enough after its last
// restart, its count starts over.
func (r *Retry) Up(key string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.m[key]; s != nil && now.Sub(s.last) >= r.Reset {
		delete(r.m, key)
	}
}

// Forget drops key (it left the blueprint).
func (r *Retry) Forget(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, key)
}
