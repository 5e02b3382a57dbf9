package natsutil_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
)

// TestFollowKVAcrossHubRestart: a daemon's FollowKV (the rollout
// controller's status, the ingest's quotas) goes on delivering values put
// after its hub restarted on the same store and ports.
func TestFollowKVAcrossHubRestart(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	_, js := p.Admin("acme")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "OCFOLLOW"})
	check.NoError(t, err)
	var mu sync.Mutex
	got := map[string]string{}
	go natsutil.FollowKV(ctx, js, "OCFOLLOW", slog.Default(), func(e jetstream.KeyValueEntry) {
		mu.Lock()
		got[e.Key()] = string(e.Value())
		mu.Unlock()
	})
	seen := func(key, value string) error {
		mu.Lock()
		defer mu.Unlock()
		if got[key] != value {
			return fmt.Errorf("FollowKV delivered %s=%q, want %q", key, got[key], value)
		}
		return nil
	}
	_, err = kv.PutString(ctx, "before", "1")
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error { return seen("before", "1") })

	p.Restart()
	restarted := time.Now()
	i := 0
	check.For(t, 60*time.Second, 500*time.Millisecond, func() error {
		mu.Lock()
		v, ok := got["after"] // any of them: the key is new
		mu.Unlock()
		if ok {
			t.Logf("FollowKV delivered after=%s %v after the restart", v, time.Since(restarted))
			return nil
		}
		i++
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if _, err := kv.PutString(pctx, "after", fmt.Sprint(i)); err != nil {
			return err
		}
		return fmt.Errorf("FollowKV delivered no value of key after (%d put)", i)
	})
}
