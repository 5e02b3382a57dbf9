package redteam

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// The fleet buckets (labels, staged, rollouts) are the hub's alone: a
// stolen site bundle on the attacker's own server, and the genuine leaf's
// own identity, try to rewrite a staged blueprint, a rollout and a node's
// labels at the hub, through the hub's JetStream API and by raw KV
// publishes across the leaf link. The hub's values must be exactly as the
// tenant admin wrote them.
func TestSiteCannotTouchFleetBuckets(t *testing.T) {
	ctx := context.Background()
	e := srcNewEnv(t, "acme")
	bundle := e.addSite("s1", "acme", nil, "n1")
	_, leafJS := e.startLeaf(bundle)
	stolen := e.stolenBox("s1", e.addSite("s2", "acme", nil, "n1"))
	_, hub := e.admin("acme")

	genuine := map[string]map[string]string{
		streams.StagedBucket:   {"meters.s1.n1": "signed envelope", "meters": `{"fleet":"meters"}`},
		streams.RolloutsBucket: {"meters": `{"fleet":"meters","state":"Paused"}`},
		streams.LabelsBucket:   {"s1.n1": `{"labels":{"role":"meter"}}`},
	}
	for bucket, kvs := range genuine {
		kv, err := hub.KeyValue(ctx, bucket)
		check.NoError(t, err)
		for k, v := range kvs {
			_, err := kv.PutString(ctx, k, v)
			check.NoError(t, err)
		}
	}
	for who, site := range map[string]jetstream.JetStream{"genuine leaf": leafJS, "stolen bundle": stolen} {
		for bucket, kvs := range genuine {
			for k := range kvs {
				actx, cancel := context.WithTimeout(ctx, time.Second)
				// Through the hub's API (the hub domain, across the link).
				if hjs, err := jetstream.NewWithDomain(flConn(site), streams.HubDomain); err == nil {
					if kv, err := hjs.KeyValue(actx, bucket); err == nil {
						if _, err := kv.PutString(actx, k, "FORGED"); err == nil {
							t.Errorf("%s: put %s/%s at the hub accepted", who, bucket, k)
						}
						if e, err := kv.Get(actx, k); err == nil {
							t.Errorf("%s: read %s/%s at the hub: %q", who, bucket, k, e.Value())
						}
					}
				}
				// A raw KV publish, as if the bucket's subjects crossed the link.
				flConn(site).Publish("$KV."+bucket+"."+k, []byte("FORGED"))
				cancel()
			}
		}
	}
	flConn(leafJS).Flush()
	flConn(stolen).Flush()
	// Whatever was in flight has landed by the time a fresh write round-trips.
	kv, err := hub.KeyValue(ctx, streams.LabelsBucket)
	check.NoError(t, err)
	_, err = kv.PutString(ctx, "probe.n1", `{}`)
	check.NoError(t, err)
	for bucket, kvs := range genuine {
		kv, err := hub.KeyValue(ctx, bucket)
		check.NoError(t, err)
		for k, want := range kvs {
			e, err := kv.Get(ctx, k)
			check.NoError(t, err)
			if string(e.Value()) != want {
				t.Errorf("hub %s/%s = %q, want %q", bucket, k, e.Value(), want)
			}
		}
		lister, err := kv.ListKeys(ctx)
		check.NoError(t, err)
		n := 0
		for range lister.Keys() {
			n++
		}
		want := len(kvs)
		if bucket == streams.LabelsBucket {
			want++ // the probe
		}
		if n != want {
			t.Errorf("hub %s holds %d keys, want %d", bucket, n, want)
		}
	}
}

// flConn is the NATS connection under a JetStream context.
func flConn(js jetstream.JetStream) *nats.Conn { return js.Conn() }
