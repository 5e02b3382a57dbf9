package bundle_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// The same site message reaching the hub both by uplink bundle and by the
// live link is stored once, whichever comes first: the import and the
// ingest give it the same id at the hub (streams.HubMsgID), and the hub
// stream's duplicate window drops the second.
//
// Bundle first: a stick written whose export could not be confirmed (the
// site's uplink did not move past it) is imported, then the site links and
// its forwarder sends the same messages again. Link first: messages the
// link took are exported again (a stick made with --from, as after a lost
// one) and imported.
func TestUplinkBundleAndLinkStoreOnce(t *testing.T) {
	ctx := context.Background()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	dir := p.AddSite("s1", "acme", nil, "n1")
	_, hjs := p.Admin("acme")
	seed, err := accounts.LeafSeed(dir)
	check.NoError(t, err)
	leafKeys, err := p.Op.SiteLeafKeys("s1", "acme")
	check.NoError(t, err)
	const tests = "telemetry.s1.n1.>" // what publish sends; not the sentinel
	export := func(sjs jetstream.JetStream, name string, from uint64, commit func() error) (string, error) {
		t.Helper()
		path := filepath.Join(t.TempDir(), name)
		f, err := os.Create(path)
		check.NoError(t, err)
		defer f.Close()
		_, err = bundle.ExportUplink(ctx, sjs, bundle.UplinkExportConfig{Site: "s1", Tenant: "acme", Seed: seed, From: from},
			bundle.NewWriter(f, bundle.Manifest{}, nil), commit)
		return path, err
	}
	// forwarded waits until the site's forwarder has everything of its
	// telemetry acknowledged by the hub's ingest: stored, or dropped as a
	// duplicate.
	forwarded := func(sjs jetstream.JetStream) {
		t.Helper()
		check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
			s, err := sjs.Stream(ctx, streams.TelemetryStream)
			if err != nil {
				return err
			}
			c, err := s.Consumer(ctx, streams.UplinkConsumer(streams.TelemetryStream))
			if err != nil {
				return err
			}
			last, floor := s.CachedInfo().State.LastSeq, c.CachedInfo().AckFloor.Stream
			if floor < last {
				return fmt.Errorf("the hub acknowledged the site's telemetry up to %d of %d", floor, last)
			}
			return nil
		})
	}

	// Bundle first.
	store := t.TempDir()
	l, stop := p.StartLeaf(dir, prodtest.LeafOptions{NoHub: true, Store: store})
	sjs := p.LeafJetStream(l)
	publish(t, sjs, "first-by-stick", 50)
	lost := errors.New("the stick's fsync failed")
	stick, err := export(sjs, "unconfirmed.alpha", 0, func() error { return lost })
	if !errors.Is(err, lost) {
		t.Fatalf("export with a failing commit: %v, want %v", err, lost)
	}
	res, err := bundle.ImportUplink(ctx, hjs, stick, leafKeys, "s1")
	check.NoError(t, err)
	check.Equal(t, res.Stored[streams.TelemetryStream], 50)
	sameIDs(t, sjs, hjs, tests)
	stop()
	l, _ = p.StartLeaf(dir, prodtest.LeafOptions{Store: store})
	sjs = p.LeafJetStream(l)
	forwarded(sjs) // all 50 again, through the ingest
	check.Equal(t, sameIDs(t, sjs, hjs, tests), 50)

	// Link first.
	publish(t, sjs, "first-by-link", 50)
	forwarded(sjs)
	check.Equal(t, sameIDs(t, sjs, hjs, tests), 100)
	again, err := export(sjs, "again.alpha", 1, nil)
	check.NoError(t, err)
	res, err = bundle.ImportUplink(ctx, hjs, again, leafKeys, "s1")
	check.NoError(t, err)
	// The first 50 the hub already imported (its marker); the other 50
	// go down the bundle stream into the hub stream's source.
	check.Equal(t, res.Stored[streams.TelemetryStream], 50)
	// The source delivers in order: once a sentinel stored into the bundle
	// stream after them is at the hub, the 50 were taken or dropped.
	bs, err := hjs.Stream(ctx, bundle.BundleStream(streams.TelemetryStream, "s1"))
	check.NoError(t, err)
	const sentinel = "telemetry.s1.sentinel"
	m := nats.NewMsg(strings.TrimSuffix(bs.CachedInfo().Config.Subjects[0], ">") + sentinel)
	m.Header.Set(jetstream.MsgIDHeader, streams.HubMsgID("s1", "sentinel"))
	_, err = hjs.PublishMsg(ctx, m)
	check.NoError(t, err)
	hs, err := hjs.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		_, err := hs.GetLastMsgForSubject(ctx, sentinel)
		return err
	})
	check.Equal(t, sameIDs(t, sjs, hjs, tests), 100)
}
