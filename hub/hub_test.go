package hub_test

import (
	"context"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRestartKeepsState restarts a hub on its store: blueprints and the
// sites' mirror consumers must survive, and bootstrapping again must not
// reset them.
func TestRestartKeepsState(t *testing.T) {
	ctx := context.Background()
	store := t.TempDir()
	cfg := hub.Config{StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: stack.Log()}
	h, err := hub.Start(ctx, cfg)
	check.NoError(t, err)
	nc, err := h.Connect()
	check.NoError(t, err)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	rev, err := kv.PutString(ctx, "s.n", "x")
	check.NoError(t, err)
	check.NoError(t, leaf.RegisterSites(ctx, js, []string{"s"}, nil))
	nc.Close()
	h.Shutdown()

	h, err = hub.Start(ctx, cfg)
	check.NoError(t, err)
	defer h.Shutdown()
	nc, err = h.Connect()
	check.NoError(t, err)
	defer nc.Close()
	js, _ = jetstream.New(nc)
	kv, err = js.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	e, err := kv.Get(ctx, "s.n")
	check.NoError(t, err)
	check.Equal(t, e.Revision(), rev)
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		check.Equal(t, len(info.Config.Sources), 0)
		// Only the ingest's subjects (and, on EVENTS, the hub's own
		// alerts.>): no site subject.
		check.Equal(t, strings.Join(info.Config.Subjects, " "), strings.Join(streams.HubUplinkConfig(name, 1, streams.HubLimits{}).Subjects, " "))
	}
	for _, st := range streams.Mirrored() {
		_, err := js.PushConsumer(ctx, st.Stream(), streams.MirrorConsumerConfig("s", st).Durable)
		check.NoError(t, err)
	}
	// The status stream still answers as a KV bucket.
	_, err = js.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
}
