package redteam

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// agentConn connects to a site leaf as node's agent: its own key, its own
// inbox, TLS as a production agent would.
func agentConn(t *testing.T, e *srcEnv, leafURL, bundle, site, node string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	opts, err := accounts.AgentOptions(site, node, filepath.Join(bundle, accounts.AgentSeedFile(node)))
	check.NoError(t, err)
	nc, err := nats.Connect(leafURL, append(opts, e.tls())...)
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, site)
	check.NoError(t, err)
	return nc, js
}

// A rogue agent key: n1's key in someone else's hands, at n1's own site leaf.
// It tries to speak for n2 and to break the site's uplink. Each attempt is
// judged by what reaches the victim (n2's status and holds, the hub's
// streams, the uplink), and n1's own traffic still flows, so the test
// cannot pass by everything being down.
func TestRogueAgentKey(t *testing.T) {
	ctx := context.Background()
	e := srcNewEnv(t, "acme")
	bundle := e.addSite("s1", "acme", nil, "n1", "n2")
	l, _ := e.startLeaf(bundle)
	_, victim := agentConn(t, e, l.ClientURL(), bundle, "s1", "n2")
	_, rogue := agentConn(t, e, l.ClientURL(), bundle, "s1", "n1")
	_, hubJS := e.admin("acme")

	// n2's genuine status, and a blueprint only n2 may read.
	skv, err := victim.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	_, err = skv.PutString(ctx, "s1.n2", `{"site":"s1","node":"n2","blueprint":"genuine"}`)
	check.NoError(t, err)
	bkv, err := hubJS.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = bkv.PutString(ctx, "s1.n2", "secret blueprint of n2")
	check.NoError(t, err)
	srcStreamHolds(t, hubJS, streams.StatusStream, "$KV.status.s1.n2", "genuine")

	attempt := func(what string, fn func(context.Context) error) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := fn(actx); err == nil {
			t.Errorf("rogue agent: %s was accepted", what)
		}
	}
	attempt("status of n2", func(ctx context.Context) error {
		kv, err := rogue.KeyValue(ctx, streams.StatusBucket)
		if err != nil {
			return err
		}
		_, err = kv.PutString(ctx, "s1.n2", `{"site":"s1","node":"n2","blueprint":"FORGED"}`)
		return err
	})
	attempt("a hold on n2", func(ctx context.Context) error {
		kv, err := rogue.KeyValue(ctx, streams.HoldsBucket)
		if err != nil {
			return err
		}
		_, err = kv.PutString(ctx, "s1.n2", `{"site":"s1","node":"n2","reason":"FORGED","until":"2999-01-01T00:00:00Z"}`)
		return err
	})
	attempt("telemetry as n2", func(ctx context.Context) error {
		_, err := rogue.Publish(ctx, "telemetry.s1.n2.host.cpu", []byte("FORGED-telemetry"))
		return err
	})
	attempt("deleting the telemetry uplink consumer", func(ctx context.Context) error {
		return rogue.DeleteConsumer(ctx, streams.TelemetryStream, streams.UplinkConsumer(streams.TelemetryStream))
	})
	attempt("reading n2's blueprint", func(ctx context.Context) error {
		kv, err := rogue.KeyValue(ctx, streams.BlueprintsBucket)
		if err != nil {
			return err
		}
		en, err := kv.Get(ctx, "s1.n2")
		if err == nil {
			t.Errorf("rogue agent read n2's blueprint: %q", en.Value())
		}
		return err
	})

	// What it may do, it does: its own telemetry reaches the hub, through
	// the uplink consumer it tried to delete.
	_, err = rogue.Publish(ctx, "telemetry.s1.n1.host.cpu", []byte("own-telemetry-of-n1"))
	check.NoError(t, err)
	srcStreamHolds(t, hubJS, streams.TelemetryStream, "telemetry.s1.n1.host.cpu", "own-telemetry-of-n1")

	// The victim: n2's status is still its own, at the site and at the hub;
	// no hold exists for it; the hub holds no telemetry under n2's name.
	en, err := skv.Get(ctx, "s1.n2")
	check.NoError(t, err)
	check.Equal(t, srcValue(en), `{"site":"s1","node":"n2","blueprint":"genuine"}`)
	srcStreamHolds(t, hubJS, streams.StatusStream, "$KV.status.s1.n2", "genuine")
	hkv, err := victim.KeyValue(ctx, streams.HoldsBucket)
	check.NoError(t, err)
	if en, err := hkv.Get(ctx, "s1.n2"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("a hold on n2 exists after the rogue agent's attempt: %v %v", en, err)
	}
	if n, subjects := srcScan(t, hubJS, streams.TelemetryStream, "FORGED"); n > 0 {
		t.Fatalf("the hub holds %d forged telemetry messages: %v", n, subjects)
	}
}
