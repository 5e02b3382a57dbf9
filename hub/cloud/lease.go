package cloud

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// lease is this hub's exclusive right to run Terraform on one configuration.
// It is a key in LockBucket, created with Create (which fails while another
// hub holds it) and kept alive by Update with the revision it last wrote.
// The bucket's TTL frees the key if the holder dies without releasing it.
type lease struct {
	r    *Reconciler
	key  string
	stop chan struct{}
	done chan struct{}
	rev  uint64 // owned by the renew goroutine until done closes
}

// acquire waits until this hub holds the lease on key. A hub that finds the
// lease taken waits instead of running Terraform beside the holder.
func (r *Reconciler) acquire(ctx context.Context, key string) (*lease, error) {
	poll := min(max(r.cfg.LeaseTTL/20, 50*time.Millisecond), time.Second)
	waited := false
	for {
		rev, err := r.locks.Create(ctx, key, []byte(r.cfg.Instance))
		if err == nil {
			l := &lease{r: r, key: key, rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
			go l.renew()
			return l, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, fmt.Errorf("taking lease %s: %w", key, err)
		}
		if !waited {
			waited = true
			r.waits.Add(1)
			holder := "another hub"
			if e, err := r.locks.Get(ctx, key); err == nil {
				holder = string(e.Value())
			}
			r.log.Info("waiting for the lease on a cloud configuration", "key", key, "holder", holder)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(poll):
		}
	}
}

func (l *lease) renew() {
	defer close(l.done)
	t := time.NewTicker(l.r.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), l.r.cfg.LeaseTTL/3)
			rev, err := l.r.locks.Update(ctx, l.key, []byte(l.r.cfg.Instance), l.rev)
			cancel()
			if err != nil {
				// Terraform keeps running: killing it mid-apply is worse than
				// the small chance another hub starts on a stale lease.
				l.r.log.Error("cloud lease lost while running terraform", "key", l.key, "err", err)
				continue
			}
			l.rev = rev
		}
	}
}

// release gives the lease up, only if this hub still holds it.
func (l *lease) release() {
	close(l.stop)
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.r.locks.Delete(ctx, l.key, jetstream.LastRevision(l.rev)); err != nil {
		l.r.log.Warn("releasing cloud lease", "key", l.key, "err", err)
	}
}
