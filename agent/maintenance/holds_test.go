package maintenance

import (
	"context"
	"fmt"
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
	holds, err := Watch(wctx, kv, "s1", "n1", func() { changes.Add(1) })
	check.NoError(t, err)
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
	if changes.Load() < 2 {
		t.Fatalf("onChange called %d times, want >= 2", changes.Load())
	}

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
