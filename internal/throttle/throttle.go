// Package throttle paces drift notifications and restarts per resource, so a
// crash-looping workload is retried with pauses instead of in a tight loop,
// while a change by hand is acted on at once; Jitter spreads periodic work.
package throttle

import (
	"sync"
	"time"
)

// Throttle forwards events per key through a token bucket: bursts of up to
// Burst events (one incident yields several: kill, died, remove) pass at
// once; beyond that one event per Every goes through, later ones merged.
type Throttle struct {
	Burst int
	Every time.Duration

	mu   sync.Mutex
	keys map[string]*bucket
}

type bucket struct {
	tokens  float64
	at      time.Time
	pending bool
}

// New returns a throttle allowing burst events at once, then one per every.
func New(burst int, every time.Duration) *Throttle {
	return &Throttle{Burst: burst, Every: every, keys: map[string]*bucket{}}
}

// Do calls fn for key now if the bucket allows, or once when it next does;
// calls that arrive while one is pending are merged into it.
func (t *Throttle) Do(key string, fn func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	b := t.keys[key]
	if b == nil {
		b = &bucket{tokens: float64(t.Burst), at: now}
		t.keys[key] = b
	}
	b.tokens = min(float64(t.Burst), b.tokens+float64(now.Sub(b.at))/float64(t.Every))
	b.at = now
	if b.pending {
		return
	}
	if b.tokens >= 1 {
		b.tokens--
		go fn()
		return
	}
	b.pending = true
	wait := time.Duration((1 - b.tokens) * float64(t.Every))
	time.AfterFunc(wait, func() {
		t.mu.Lock()
		b.pending = false
		b.tokens = 0 // the token that accrued is spent now
		b.at = time.Now()
		t.mu.Unlock()
		fn()
	})
}
