package leaf_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// A hub registered before landing streams sources each site directly and
// unfiltered; Register converts it: the direct source goes, the site lands
// in its own stream and the hub stream takes only the site's subjects.
func TestRegisterConvertsDirectSource(t *testing.T) {
	ctx := context.Background()
	js := addDirect(t, "s", "other")
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		check.NoError(t, leaf.Register(ctx, js, "s", name))
		check.NoError(t, leaf.Register(ctx, js, "s", name)) // idempotent

		info, err := s.Info(ctx)
		check.NoError(t, err)
		var got []string
		for _, src := range info.Config.Sources {
			ext := ""
			if src.External != nil {
				ext = src.External.APIPrefix
			}
			got = append(got, src.Name+"|"+ext+"|"+src.FilterSubject)
		}
		want := []string{name + "|$JS.other.API|", streams.LandingStream(name, "s") + "||" + streams.UplinkSubjects(name, "s")}
		check.Equal(t, len(got), len(want))
		for i := range want {
			check.Equal(t, got[i], want[i])
		}
		ls, err := js.Stream(ctx, streams.LandingStream(name, "s"))
		check.NoError(t, err)
		linfo, err := ls.Info(ctx)
		check.NoError(t, err)
		check.Equal(t, len(linfo.Config.Sources), 1)
		check.Equal(t, linfo.Config.Sources[0].External.APIPrefix, "$JS.s.API")
		check.Equal(t, linfo.Config.Discard, jetstream.DiscardNew)
	}
}

// Upgrade converts every direct registration the hub holds, as `alpha hub`
// does for each tenant at start.
func TestUpgradeConvertsEverySite(t *testing.T) {
	ctx := context.Background()
	js := addDirect(t, "a", "b")
	sites, err := leaf.Upgrade(ctx, js)
	check.NoError(t, err)
	check.Equal(t, strings.Join(sites, ","), "a,b")
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		for _, src := range info.Config.Sources {
			if src.External != nil || src.FilterSubject == "" {
				t.Errorf("hub %s still has source %+v", name, src)
			}
		}
	}
	again, err := leaf.Upgrade(ctx, js)
	check.NoError(t, err)
	check.Equal(t, len(again), 0)
}

// addDirect starts a hub and registers sites the way hubs did before
// landing streams: its uplink streams source each site directly,
// unfiltered.
func addDirect(t *testing.T, sites ...string) jetstream.JetStream {
	t.Helper()
	ctx := context.Background()
	nc, err := startHub(t).Connect()
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		cfg := info.Config
		for _, site := range sites {
			cfg.Sources = append(cfg.Sources, leaf.UplinkSource(site, name))
		}
		_, err = js.UpdateStream(ctx, cfg)
		check.NoError(t, err)
	}
	return js
}
