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

func TestThrottleBurstThenPaced(t *testing.T) {
	th := New(3, 200*time.Millisecond)
	fired := make(chan time.Time, 100)
	start := time.Now()
	for i := 0; i < 10; i++ {
		th.Do("k", func() { fired <- time.Now() })
	}
	for i := 0; i < 4; i++ { // 3 at once, then one merged call later
		select {
		case at := <-fired:
			if i < 3 && at.Sub(start) > 100*time.Millisecond {
				t.Fatalf("burst call %d after %v", i, at.Sub(start))
			}
			if i == 3 && at.Sub(start) < 150*time.Millisecond {
				t.Fatalf("paced call after only %v", at.Sub(start))
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("call %d never came", i)
		}
	}
	select {
	case <-fired:
		t.Fatal("merged calls fired more than once")
	case <-time.After(300 * time.Millisecond):
	}
}

func TestJitterStaysWithinSpread(t *testing.T) {
	d := 10 * time.Second
	lo, hi := d, d
	for range 2000 {
		j := Jitter(d, 20)
		if j < d-2*time.Second || j > d+2*time.Second {
			t.Fatalf("Jitter(%v, 20) = %v, outside +-20%%", d, j)
		}
		lo, hi = min(lo, j), max(hi, j)
	}
	if hi-lo < time.Second {
		t.Fatalf("Jitter(%v, 20) spread only %v..%v: not jittering", d, lo, hi)
	}
	if Jitter(0, 10) != 0 || Jitter(d, 0) != d {
		t.Fatal("Jitter of zero duration or zero percent must return d unchanged")
	}
}
