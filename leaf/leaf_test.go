package leaf_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

func startHub(t *testing.T) *hub.Hub {
	t.Helper()
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1"})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	return h
}

func startLeaf(t *testing.T, site, hubURL, store string) *leaf.Leaf {
	t.Helper()
	l, err := leaf.Start(context.Background(), leaf.Config{Site: site, HubURLs: []string{hubURL}, StoreDir: store, Listen: "127.0.0.1:-1"})
	check.NoError(t, err)
	t.Cleanup(l.Shutdown)
	return l
}

func kv(t *testing.T, url, domain, bucket string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(url)
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, domain)
	check.NoError(t, err)
	b, err := js.KeyValue(context.Background(), bucket)
	check.NoError(t, err)
	return b
}

func TestMirrorHoldsOnlyOwnSite(t *testing.T) {
	ctx := context.Background()
	h := startHub(t)
	la := startLeaf(t, "a", h.LeafURL(), t.TempDir())
	startLeaf(t, "b", h.LeafURL(), t.TempDir())
	hubBP := kv(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	revA, err := hubBP.Put(ctx, "a.n1", []byte("for a"))
	check.NoError(t, err)
	_, err = hubBP.Put(ctx, "b.n1", []byte("for b"))
	check.NoError(t, err)

	siteBP := kv(t, la.ClientURL(), "a", streams.BlueprintsBucket)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		e, err := siteBP.Get(ctx, "a.n1")
		if err != nil {
			return err
		}
		if string(e.Value()) != "for a" {
			return fmt.Errorf("value %q", e.Value())
		}
		// The mirror keeps the hub's sequence numbers, so the revision a
		// user sees at the hub is the one the agent reports.
		if e.Revision() != revA {
			return fmt.Errorf("site revision %d, hub revision %d", e.Revision(), revA)
		}
		return nil
	})
	if _, err := siteBP.Get(ctx, "b.n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("site a holds site b's key: %v", err)
	}
	st, err := siteBP.Status(ctx)
	check.NoError(t, err)
	check.Equal(t, st.Values(), uint64(1))
}

func TestStatusFlowsUp(t *testing.T) {
	ctx := context.Background()
	h := startHub(t)
	la := startLeaf(t, "a", h.LeafURL(), t.TempDir())
	siteStatus := kv(t, la.ClientURL(), "a", streams.StatusBucket)
	_, err := siteStatus.Put(ctx, "a.n1", []byte(`{"phase":"Converged"}`))
	check.NoError(t, err)
	hubStatus := kv(t, h.ClientURL(), "hub", streams.StatusBucket)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		e, err := hubStatus.Get(ctx, "a.n1")
		if err != nil {
			return err
		}
		if string(e.Value()) != `{"phase":"Converged"}` {
			return fmt.Errorf("value %q", e.Value())
		}
		return nil
	})
}
