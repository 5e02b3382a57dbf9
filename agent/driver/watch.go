package driver

import (
	"context"
	"time"
)

// Poll calls check every interval until ctx is done: the Watch of a driver
// whose state has no change events (sysctl values, file contents under a
// policy). check compares with what it saw last and notifies on a change.
func Poll(ctx context.Context, every time.Duration, check func(ctx context.Context)) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		check(ctx)
	}
}

// Reconnect runs follow until ctx is done, again each time it returns: the
// Watch of a driver that follows an event stream (podman events, systemd
// signals) which breaks when its daemon restarts. reconnect is false on the
// first run only, so follow can ask for a pass after a gap. Between runs it
// waits 100ms, doubling to 10s, back to 100ms after a run that lasted over
// 10s; ended is told why a run ended and how long the wait is.
func Reconnect(ctx context.Context, follow func(ctx context.Context, reconnect bool) error, ended func(err error, in time.Duration)) error {
	const first, most, settled = 100 * time.Millisecond, 10 * time.Second, 10 * time.Second
	backoff := first
	for again := false; ctx.Err() == nil; again = true {
		start := time.Now()
		err := follow(ctx, again)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(start) > settled {
			backoff = first
		}
		ended(err, backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, most)
	}
	return nil
}
