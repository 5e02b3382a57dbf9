package maintenance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// leaf starts an embedded JetStream server standing in for a site leaf.
func leaf(t *testing.T) jetstream.JetStream {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		JetStreamDomain: "site1", StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	check.NoError(t, err)
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	return js
}

// watch is the agent's start: node s1.n1's holds loaded from the state
// directory dir, then following kv until ctx is done.
func watch(t *testing.T, ctx context.Context, kv jetstream.KeyValue, dir string, log *slog.Logger, onChange func()) *Holds {
	t.Helper()
	holds, err := Load(dir, "s1", "n1", log)
	check.NoError(t, err)
	check.NoError(t, holds.Watch(ctx, kv, onChange))
	return holds
}

func TestHoldsThroughKV(t *testing.T) {
	ctx := context.Background()
	js := leaf(t)
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)
	kv2, err := EnsureBucket(ctx, js) // idempotent
	check.NoError(t, err)
	check.Equal(t, kv2.Bucket(), streams.HoldsBucket)

	now := time.Now()
	early, err := NewHold("s1", "n1", now, time.Hour, "already held", "", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, early))

	var changes atomic.Int32
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	holds := watch(t, wctx, kv, t.TempDir(), nil, func() { changes.Add(1) })
	// The hold present before the watch started is there on return.
	h, ok := holds.Current()
	if !ok || h.Reason != "already held" {
		t.Fatalf("initial hold not read: %+v %v", h, ok)
	}

	// Another node's hold does not concern this one.
	other, _ := NewHold("s1", "n2", now, time.Hour, "other", "", nil)
	check.NoError(t, Put(ctx, kv, other))

	h2, _ := NewHold("s1", "n1", now, 2*time.Hour, "debugging", "ops", []string{"unit:meter.service"})
	check.NoError(t, Put(ctx, kv, h2))
	check.For(t, 2*time.Second, 5*time.Millisecond, func() error {
		if h, _ := holds.Current(); h.Reason != "debugging" || len(h.Resources) != 1 {
			return fmt.Errorf("hold is %+v", h)
		}
		return nil
	})
	check.NoError(t, Release(ctx, kv, "s1", "n1"))
	check.For(t, 2*time.Second, 5*time.Millisecond, func() error {
		if _, ok := holds.Current(); ok {
			return fmt.Errorf("hold not released")
		}
		return nil
	})
	// onChange follows the saving of the state, a moment after the hold
	// is visible.
	check.For(t, 2*time.Second, 5*time.Millisecond, func() error {
		if n := changes.Load(); n < 2 {
			return fmt.Errorf("onChange called %d times, want >= 2", n)
		}
		return nil
	})

	// A hand-written hold without a creation time is bounded by the
	// bucket's own timestamp.
	_, err = kv.Put(ctx, "s1.n1", []byte(`{"reason":"forever","until":"2999-01-01T00:00:00Z"}`))
	check.NoError(t, err)
	check.For(t, 2*time.Second, 5*time.Millisecond, func() error {
		h, ok := holds.Current()
		if !ok || h.Expiry().After(time.Now().Add(MaxHold)) {
			return fmt.Errorf("hold %+v not bounded by MaxHold", h)
		}
		return nil
	})
}

// TestHoldOutlivesItsBucket: deleting the holds bucket (an operator's
// mistake, or someone who wants the agent's hands back on a held node)
// does not release the hold: it stays in force while the bucket is gone
// and after it comes back empty. The watch is made again once the bucket
// is back, so a new hold put there takes effect.
func TestHoldOutlivesItsBucket(t *testing.T) {
	ctx := context.Background()
	js := leaf(t)
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)
	before, err := NewHold("s1", "n1", time.Now(), time.Hour, "before", "", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, before))
	logged := &check.Buffer{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	holds := watch(t, wctx, kv, t.TempDir(), slog.New(slog.NewTextHandler(logged, nil)), nil)
	inForce := func(reason string) error {
		h, ok := holds.Current()
		if !ok || h.Reason != reason || !h.Active(time.Now()) {
			return fmt.Errorf("hold is %+v (held: %v), want %q in force", h, ok, reason)
		}
		return nil
	}
	check.NoError(t, inForce("before"))

	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logged.String(), "hold watch ended") {
			return fmt.Errorf("the watch did not notice the bucket's deletion; log:\n%s", logged.String())
		}
		return nil
	})
	check.NoError(t, inForce("before"))

	// Back, empty: the last hold seen stays.
	kv, err = EnsureBucket(ctx, js)
	check.NoError(t, err)
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		if !strings.Contains(logged.String(), "hold watch resumed") {
			return fmt.Errorf("the watch did not resume; log:\n%s", logged.String())
		}
		return nil
	})
	check.NoError(t, inForce("before"))

	after, err := NewHold("s1", "n1", time.Now(), time.Hour, "after", "", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, after))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error { return inForce("after") })
	check.NoError(t, Release(ctx, kv, "s1", "n1"))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h, ok := holds.Current(); ok {
			return fmt.Errorf("hold %+v not released", h)
		}
		return nil
	})
}

// TestHoldInBucketMadeAgainAtOnce: the bucket is deleted and made again
// before the watch noticed; nats.go's watch would carry on from the old
// bucket's sequence and skip the new one's first entries. A hold put there
// still takes effect, and one released there ends.
func TestHoldInBucketMadeAgainAtOnce(t *testing.T) {
	ctx := context.Background()
	js := leaf(t)
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)
	for _, r := range []string{"first", "second", "before"} {
		h, err := NewHold("s1", "n1", time.Now(), time.Hour, r, "", nil)
		check.NoError(t, err)
		check.NoError(t, Put(ctx, kv, h))
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	holds := watch(t, wctx, kv, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)), nil)

	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	kv, err = EnsureBucket(ctx, js)
	check.NoError(t, err)
	after, err := NewHold("s1", "n1", time.Now(), time.Hour, "after", "", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, after))
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		if h, ok := holds.Current(); !ok || h.Reason != "after" {
			return fmt.Errorf("hold is %+v (held: %v), want the one put in the new bucket", h, ok)
		}
		return nil
	})
	check.NoError(t, Release(ctx, kv, "s1", "n1"))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if h, ok := holds.Current(); ok {
			return fmt.Errorf("hold %+v not released", h)
		}
		return nil
	})
}
