package leaf_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// A hub from before the ingest sourced each site's uplink into its stream,
// straight or through a landing stream of the site's own. Upgrade removes
// those sources and landing streams and keeps the air-gap bundle sources.
func TestUpgradeRemovesSiteSources(t *testing.T) {
	ctx := context.Background()
	nc, err := startHub(t).Connect()
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	bundleSrc := func(name string) string { return "BUNDLE_" + name + "_c" }
	for _, name := range streams.Uplinks() {
		for _, extra := range []string{streams.LandingStream(name, "b"), bundleSrc(name)} {
			_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: extra, Subjects: []string{"legacy." + extra}})
			check.NoError(t, err)
		}
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		cfg := info.Config
		cfg.Sources = append(cfg.Sources,
			&jetstream.StreamSource{Name: name, External: &jetstream.ExternalStream{APIPrefix: streams.APIPrefix("a")}},
			&jetstream.StreamSource{Name: streams.LandingStream(name, "b"), FilterSubject: streams.UplinkSubjects(name, "b")},
			&jetstream.StreamSource{Name: bundleSrc(name), FilterSubject: streams.UplinkSubjects(name, "c")})
		_, err = js.UpdateStream(ctx, cfg)
		check.NoError(t, err)
	}
	sites, err := leaf.Upgrade(ctx, js)
	check.NoError(t, err)
	check.Equal(t, strings.Join(sites, ","), "a,b")
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		check.Equal(t, len(info.Config.Sources), 1)
		check.Equal(t, info.Config.Sources[0].Name, bundleSrc(name))
		if _, err := js.Stream(ctx, streams.LandingStream(name, "b")); err == nil {
			t.Errorf("landing stream %s still there", streams.LandingStream(name, "b"))
		}
	}
	again, err := leaf.Upgrade(ctx, js)
	check.NoError(t, err)
	check.Equal(t, len(again), 0)
}

// RegisterSites makes the mirror consumers and writes a given quota; again
// it changes nothing.
func TestRegisterSites(t *testing.T) {
	ctx := context.Background()
	nc, err := startHub(t).Connect()
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	q := streams.DefaultSiteQuota
	q.TelemetryBytes = 1 << 20
	for range 2 {
		check.NoError(t, leaf.RegisterSites(ctx, js, []string{"a", "b"}, &q))
	}
	for _, site := range []string{"a", "b"} {
		for _, st := range streams.Mirrored() {
			_, err := js.PushConsumer(ctx, st.Stream(), streams.MirrorConsumerConfig(site, st).Durable)
			check.NoError(t, err)
		}
	}
	kv, err := js.KeyValue(ctx, streams.QuotasBucket)
	check.NoError(t, err)
	e, err := kv.Get(ctx, "a")
	check.NoError(t, err)
	check.Equal(t, e.Revision(), 1)
	var got streams.SiteQuota
	check.NoError(t, json.Unmarshal(e.Value(), &got))
	check.Equal(t, got, q)

	bad := q
	bad.Window = 0
	err = leaf.RegisterSites(ctx, js, []string{"a"}, &bad)
	if err == nil || !strings.Contains(err.Error(), "window") {
		t.Fatalf("a quota without a window: %v, want an error naming the window", err)
	}
}
