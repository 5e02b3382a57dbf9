package throttle

import (
	"testing"
	"time"
)

func TestRetryBacksOffAndResets(t *testing.T) {
	r := NewRetry(time.Second, 4*time.Second, time.Minute)
	t0 := time.Unix(1000, 0)
	if !r.Next("a").IsZero() {
		t.Fatal("first restart should be immediate")
	}
	r.Restarted("a", t0)
	for i, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		if got := r.Next("a").Sub(t0); got != want {
			t.Fatalf("restart %d: wait %v, want %v", i+2, got, want)
		}
		r.Restarted("a", t0)
	}
	r.Up("a", t0.Add(time.Second))
	if r.Next("a").IsZero() {
		t.Fatal("a short run should not reset the backoff")
	}
	r.Up("a", t0.Add(time.Minute))
	if !r.Next("a").IsZero() {
		t.Fatal("a long run should reset the backoff")
	}
}
