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

// dedupeSite is site s1 of tenant acme at a production hub, with what an
// uplink export and import of it need.
type dedupeSite struct {
	t        *testing.T
	p        *prodtest.Hub
	dir      string
	hjs      jetstream.JetStream
	seed     []byte
	leafKeys []string
}

func newDedupeSite(t *testing.T) *dedupeSite {
	t.Helper()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	d := &dedupeSite{t: t, p: p, dir: p.AddSite("s1", "acme", nil, "n1")}
	_, d.hjs = p.Admin("acme")
	var err error
	d.seed, err = accounts.LeafSeed(d.dir)
	check.NoError(t, err)
	d.leafKeys, err = p.Op.SiteLeafKeys("s1", "acme")
	check.NoError(t, err)
	return d
}

// export writes an uplink bundle of the site's streams from site sequence
// from on (0: after the uplink's ack floor) to a new file.
func (d *dedupeSite) export(sjs jetstream.JetStream, name string, from uint64, commit func() error) (string, error) {
	d.t.Helper()
	path := filepath.Join(d.t.TempDir(), name)
	f, err := os.Create(path)
	check.NoError(d.t, err)
	defer f.Close()
	_, err = bundle.ExportUplink(context.Background(), sjs, bundle.UplinkExportConfig{Site: "s1", Tenant: "acme", Seed: d.seed, From: from},
		bundle.NewWriter(f, bundle.Manifest{}, nil), commit)
	return path, err
}

// unconfirmed writes an uplink bundle whose commit fails (the stick's
// fsync): the site's uplink does not move past it, so the link sends the
// same messages again.
func (d *dedupeSite) unconfirmed(sjs jetstream.JetStream) string {
	d.t.Helper()
	lost := errors.New("the stick's fsync failed")
	path, err := d.export(sjs, "unconfirmed.alpha", 0, func() error { return lost })
	if !errors.Is(err, lost) {
		d.t.Fatalf("export with a failing commit: %v, want %v", err, lost)
	}
	return path
}

// importTelemetry imports the uplink bundle at path and checks it stored
// want telemetry messages into the site's bundle stream.
func (d *dedupeSite) importTelemetry(path string, want int) {
	d.t.Helper()
	res, err := bundle.ImportUplink(context.Background(), d.hjs, path, d.leafKeys, "s1")
	check.NoError(d.t, err)
	check.Equal(d.t, res.Stored[streams.TelemetryStream], want)
}

// forwarded waits until the site's forwarder has everything of its
// telemetry acknowledged by the hub's ingest: stored, or dropped as a
// duplicate.
func forwarded(t *testing.T, sjs jetstream.JetStream) {
	t.Helper()
	ctx := context.Background()
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

// stickAgain exports the site's uplink again from its first sequence, as
// after a lost stick, imports it, checks it stored want telemetry messages
// into the site's bundle stream, and waits until the hub stream's source
// of that took (stored or dropped) them all. The source delivers in order:
// once a sentinel stored into the bundle stream after them is at the hub,
// the rest were taken or dropped.
func (d *dedupeSite) stickAgain(sjs jetstream.JetStream, want int) {
	d.t.Helper()
	t, ctx := d.t, context.Background()
	again, err := d.export(sjs, "again.alpha", 1, nil)
	check.NoError(t, err)
	d.importTelemetry(again, want)
	const sentinel = "telemetry.s1.sentinel"
	bs, err := d.hjs.Stream(ctx, bundle.BundleStream(streams.TelemetryStream, "s1"))
	check.NoError(t, err)
	m := nats.NewMsg(strings.TrimSuffix(bs.CachedInfo().Config.Subjects[0], ">") + sentinel)
	m.Header.Set(jetstream.MsgIDHeader, streams.HubMsgID("s1", fmt.Sprintf("sentinel-%d", time.Now().UnixNano())))
	_, err = d.hjs.PublishMsg(ctx, m)
	check.NoError(t, err)
	hs, err := d.hjs.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		got, err := hs.GetLastMsgForSubject(ctx, sentinel)
		if err != nil {
			return err
		}
		if got.Header.Get(jetstream.MsgIDHeader) != m.Header.Get(jetstream.MsgIDHeader) {
			return fmt.Errorf("the hub holds an older sentinel")
		}
		return nil
	})
}

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
	d := newDedupeSite(t)
	const tests = "telemetry.s1.n1.>" // what publish sends; not the sentinel

	// Bundle first.
	store := t.TempDir()
	l, stop := d.p.StartLeaf(d.dir, prodtest.LeafOptions{NoHub: true, Store: store})
	sjs := d.p.LeafJetStream(l)
	publish(t, sjs, "first-by-stick", 50)
	d.importTelemetry(d.unconfirmed(sjs), 50)
	sameIDs(t, sjs, d.hjs, tests)
	stop()
	l, _ = d.p.StartLeaf(d.dir, prodtest.LeafOptions{Store: store})
	sjs = d.p.LeafJetStream(l)
	forwarded(t, sjs) // all 50 again, through the ingest
	check.Equal(t, sameIDs(t, sjs, d.hjs, tests), 50)

	// Link first.
	publish(t, sjs, "first-by-link", 50)
	forwarded(t, sjs)
	check.Equal(t, sameIDs(t, sjs, d.hjs, tests), 100)
	// The first 50 the hub already imported (its marker); the other 50
	// go down the bundle stream into the hub stream's source.
	d.stickAgain(sjs, 50)
	check.Equal(t, sameIDs(t, sjs, d.hjs, tests), 100)
}

// publishNoID sends n telemetry messages at the site WITHOUT a
// Nats-Msg-Id, as a workload publishing with the plain nats CLI does;
// each has content of its own.
func publishNoID(t *testing.T, js jetstream.JetStream, tag string, n int) {
	t.Helper()
	for i := range n {
		_, err := js.Publish(context.Background(), "telemetry.s1.n1.noid."+tag, fmt.Appendf(nil, `{"name":"noid.%s","value":%d}`, tag, i))
		check.NoError(t, err)
	}
}

// storedOnce waits until the hub holds every telemetry message of s1
// matching filter that the site holds, and fails as soon as it holds one
// of them twice or holds one the site does not. Messages are told apart by
// subject and content, as they may carry no id. It returns how many.
func storedOnce(t *testing.T, sjs, hjs jetstream.JetStream, filter string) int {
	t.Helper()
	var n int
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		site, hub := msgCounts(t, sjs, streams.TelemetryStream, filter), msgCounts(t, hjs, streams.TelemetryStream, filter)
		lost := 0
		for m := range site {
			if hub[m] == 0 {
				lost++
			}
		}
		for m, c := range hub {
			if c > 1 {
				t.Fatalf("hub stores %d copies of %s (of %d distinct site messages, %d at the hub)", c, m, len(site), len(hub))
			}
			if site[m] == 0 {
				t.Fatalf("hub stores %s, which the site does not hold", m)
			}
		}
		if lost > 0 {
			return fmt.Errorf("site %d messages, hub %d: %d not at the hub yet", len(site), len(hub), lost)
		}
		n = len(site)
		return nil
	})
	return n
}

// A site message with no Nats-Msg-Id of its own that reaches the hub both
// by uplink bundle and by the live link is stored once, in either order:
// the forwarder and the export give it the same id (site, stream, the
// stream's creation time, its sequence), which the hub scopes by the site
// as it does every id. Without that, the link sent it under a made-up id
// and the stick without one, and the hub kept both.
func TestUplinkBundleAndLinkStoreOnceWithoutIDs(t *testing.T) {
	const filter = "telemetry.s1.n1.noid.>"
	t.Run("bundle first", func(t *testing.T) {
		d := newDedupeSite(t)
		store := t.TempDir()
		l, stop := d.p.StartLeaf(d.dir, prodtest.LeafOptions{NoHub: true, Store: store})
		sjs := d.p.LeafJetStream(l)
		publishNoID(t, sjs, "stick", 50)
		d.importTelemetry(d.unconfirmed(sjs), 50)
		check.Equal(t, storedOnce(t, sjs, d.hjs, filter), 50)
		stop()
		l, _ = d.p.StartLeaf(d.dir, prodtest.LeafOptions{Store: store}) // restarted: same stream, same ids
		sjs = d.p.LeafJetStream(l)
		forwarded(t, sjs)
		check.Equal(t, storedOnce(t, sjs, d.hjs, filter), 50)
	})
	t.Run("link first", func(t *testing.T) {
		d := newDedupeSite(t)
		l, _ := d.p.StartLeaf(d.dir, prodtest.LeafOptions{})
		sjs := d.p.LeafJetStream(l)
		publishNoID(t, sjs, "link", 50)
		forwarded(t, sjs)
		check.Equal(t, storedOnce(t, sjs, d.hjs, filter), 50)
		d.stickAgain(sjs, 50)
		check.Equal(t, storedOnce(t, sjs, d.hjs, filter), 50)
	})
}

// A site whose store was replaced (a new disk; a new --store, as taking a
// site off the link asks) numbers its stream from 1 again. The hub's
// record of the site sequences it imported belongs to the stream before,
// so the new stream's messages on a stick are stored, not skipped as
// "already there".
func TestUplinkImportAfterNewSiteStore(t *testing.T) {
	d := newDedupeSite(t)
	l, stop := d.p.StartLeaf(d.dir, prodtest.LeafOptions{NoHub: true})
	sjs := d.p.LeafJetStream(l)
	publishNoID(t, sjs, "old-store", 5)
	first, err := d.export(sjs, "first.alpha", 0, nil)
	check.NoError(t, err)
	d.importTelemetry(first, 5)
	stop()
	l, _ = d.p.StartLeaf(d.dir, prodtest.LeafOptions{NoHub: true}) // a new store
	sjs = d.p.LeafJetStream(l)
	publishNoID(t, sjs, "new-store", 5)
	second, err := d.export(sjs, "second.alpha", 0, nil)
	check.NoError(t, err)
	d.importTelemetry(second, 5)
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		hub := msgCounts(t, d.hjs, streams.TelemetryStream, "telemetry.s1.n1.noid.>")
		for m, c := range hub {
			if c != 1 {
				t.Fatalf("hub stores %d copies of %s", c, m)
			}
		}
		if len(hub) != 10 {
			return fmt.Errorf("hub holds %d of the 10 messages of both stores", len(hub))
		}
		return nil
	})
}
