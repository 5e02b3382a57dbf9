package redteam

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// udAttack is tenant t1 at a production hub with two sites: s2 runs a
// genuine leaf (the victim), s1's leaf credentials run the attacker's own
// server (a stolen box), with a client of it that may call the ingest as
// s1.
type udAttack struct {
	env     *srcEnv
	hjs     jetstream.JetStream // the tenant administrator's, at the hub
	victim  jetstream.JetStream // s2's leaf, its own domain
	boxJS   jetstream.JetStream // the stolen box, s1's domain
	box     *nats.Conn
	bundle1 string
}

func udStolenS1(t *testing.T) *udAttack {
	t.Helper()
	e := srcNewEnv(t, "t1")
	a := &udAttack{env: e, bundle1: e.addSite("s1", "t1", nil, "n1")}
	bundle2 := e.addSite("s2", "t1", nil, "n1")
	_, a.hjs = e.admin("t1")
	_, a.victim = e.startLeaf(bundle2)
	a.boxJS = e.stolenBox("s1", a.bundle1)
	var err error
	a.box, err = nats.Connect(a.boxJS.Conn().ConnectedUrl(), nats.CustomInboxPrefix(streams.IngestReplyPrefix("s1")))
	check.NoError(t, err)
	t.Cleanup(a.box.Close)
	return a
}

// A site's messages without an id of their own go to the hub under an id
// anyone can work out (site, stream, the stream's creation time, sequence:
// streams.UplinkIDs), by link and by stick alike. A stolen box (s1's leaf
// credentials, the attacker's own server) sends, before s2 does, messages
// under its own subjects carrying exactly the ids s2's next messages will
// get: through the hub's ingest, and on an uplink bundle signed with s1's
// key. The hub scopes every id by the site it knows (streams.HubMsgID), so
// it must hold all of s2's messages, each once, and the attacker's own as
// well (the attack reached the hub). Only this order matters: a duplicate
// window drops the later copy, never the one stored.
func TestSiteCannotDropAnotherSitesIDlessMessages(t *testing.T) {
	ctx := context.Background()
	a := udStolenS1(t)
	e, hjs, victim, boxJS, box := a.env, a.hjs, a.victim, a.boxJS, a.box
	seed, err := accounts.LeafSeed(a.bundle1)
	check.NoError(t, err)
	s1Keys, err := e.Op.SiteLeafKeys("s1", "t1")
	check.NoError(t, err)

	// The worst case: the attacker knows s2's stream and where it is.
	vs, err := victim.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	next := vs.CachedInfo().State.LastSeq + 1
	ids := streams.NewUplinkIDs("s2", streams.TelemetryStream, vs.CachedInfo().Created)
	const n = 10
	victimSubj, byLink, byStick := midSubject(streams.TelemetryStream, "s2", "noid"),
		midSubject(streams.TelemetryStream, "s1", "noid-link"), midSubject(streams.TelemetryStream, "s1", "noid-stick")
	// s2's next n by link, the n after them by stick (the same id twice
	// from s1 would be s1's own duplicate).
	var want, forgedLink, forgedStick []string
	var recs []streams.Record
	for i := range uint64(n) {
		want = append(want, fmt.Sprintf(`{"site":"s2","n":%d}`, i), fmt.Sprintf(`{"site":"s2","n":%d}`, n+i))
		forgedLink = append(forgedLink, fmt.Sprintf(`{"site":"s1","n":%d,"by":"link"}`, i))
		forgedStick = append(forgedStick, fmt.Sprintf(`{"site":"s1","n":%d,"by":"stick"}`, i))
		recs = append(recs, streams.Record{Seq: i + 1, Subject: byLink, ID: ids.ID("", next+i), Data: []byte(forgedLink[i])})
		m := nats.NewMsg(byStick)
		m.Header.Set(jetstream.MsgIDHeader, ids.ID("", next+n+i))
		m.Data = []byte(forgedStick[i])
		_, err := boxJS.PublishMsg(ctx, m)
		check.NoError(t, err)
	}
	r, err := srcIngest(box, "s1", streams.TelemetryStream, recs...)
	check.NoError(t, err)
	if r.Stored != n || r.Error != "" {
		t.Fatalf("ingest answered %+v to the attacker's %d records", r, n)
	}
	stick := filepath.Join(t.TempDir(), "s1.alpha")
	f, err := os.Create(stick)
	check.NoError(t, err)
	_, err = bundle.ExportUplink(ctx, boxJS, bundle.UplinkExportConfig{Site: "s1", Tenant: "t1", Seed: seed},
		bundle.NewWriter(f, bundle.Manifest{}, nil), f.Sync)
	check.NoError(t, err)
	check.NoError(t, f.Close())
	res, err := bundle.ImportUplink(ctx, hjs, stick, s1Keys, "s1")
	check.NoError(t, err)
	check.Equal(t, res.Stored[streams.TelemetryStream], n)
	midHubHolds(t, hjs, streams.TelemetryStream, byLink, forgedLink)
	midHubHolds(t, hjs, streams.TelemetryStream, byStick, forgedStick)

	// s2's genuine messages, with no id of their own: its forwarder sends
	// them under the very ids the attacker used.
	for i := range 2 * n {
		_, err := victim.Publish(ctx, victimSubj, fmt.Appendf(nil, `{"site":"s2","n":%d}`, i))
		check.NoError(t, err)
	}
	midHubHolds(t, hjs, streams.TelemetryStream, victimSubj, want)
}
