package redteam

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// srcEnv is a production hub (prodtest): operator mode, TLS on both
// listeners, one tenant's sites registered as `alpha site add` does.
type srcEnv struct {
	*prodtest.Hub
	t   testing.TB
	pki tlsfiles.Files
	hub *hub.Hub
}

func srcNewEnv(t testing.TB, tenants ...string) *srcEnv {
	t.Helper()
	return srcNewEnvLimits(t, accounts.DefaultTenantLimits, tenants...)
}

// srcNewEnvLimits is srcNewEnv with the tenants' JetStream limits.
func srcNewEnvLimits(t testing.TB, lim accounts.TenantLimits, tenants ...string) *srcEnv {
	t.Helper()
	p := prodtest.Start(t, prodtest.Options{Tenants: tenants, Limits: lim})
	return &srcEnv{Hub: p, t: t, pki: p.PKI, hub: p.Hub}
}

func (e *srcEnv) tls() nats.Option { return e.TLS() }

// admin is a tenant administrator's JetStream at the hub.
func (e *srcEnv) admin(tenant string) (*nats.Conn, jetstream.JetStream) { return e.Admin(tenant) }

// addSite issues a site's bundle and registers it with quota (nil: the
// defaults), as `alpha site add` does.
func (e *srcEnv) addSite(site, tenant string, quota *streams.SiteQuota, nodes ...string) string {
	e.t.Helper()
	return e.AddSite(site, tenant, quota, nodes...)
}

// startLeaf runs a genuine site leaf from its bundle and returns a client
// of its own domain with the leaf's own (unrestricted) identity.
func (e *srcEnv) startLeaf(bundle string) (*leaf.Leaf, jetstream.JetStream) {
	e.t.Helper()
	l, _ := e.StartLeaf(bundle, prodtest.LeafOptions{ServeTLS: true})
	return l, e.LeafJetStream(l)
}

// stolenBox is the attacker's own box: a stock nats-server with JetStream in
// the stolen site's domain, joined to the hub with the bundle's leaf.creds,
// holding whatever streams the attacker likes under the names the hub
// sources from. Its local clients need no credentials.
func (e *srcEnv) stolenBox(site, bundle string) jetstream.JetStream {
	e.t.Helper()
	u, err := url.Parse(e.hub.LeafURL())
	check.NoError(e.t, err)
	opts := &server.Options{ServerName: "stolen-" + site, Host: "127.0.0.1", Port: -1, NoSigs: true,
		JetStream: true, JetStreamDomain: site, StoreDir: e.t.TempDir(),
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 200 * time.Millisecond,
			Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}, Credentials: filepath.Join(bundle, accounts.LeafCredsFile)}}}}
	accounts.ScopedSubjects(opts)
	check.NoError(e.t, e.pki.Leaf(opts))
	opts.TLSConfig, opts.TLS = nil, false
	s, err := server.NewServer(opts)
	check.NoError(e.t, err)
	check.NoError(e.t, natsutil.Start(s, stack.Log()))
	e.t.Cleanup(s.Shutdown)
	// Linked, and the hub's interest in the bundle's site's ingest has
	// arrived (before it, a request there has no responders: seen under
	// load).
	cfg, err := accounts.LoadSite(bundle)
	check.NoError(e.t, err)
	check.For(e.t, 30*time.Second, 20*time.Millisecond, func() error {
		if !s.GlobalAccount().SubscriptionInterest(streams.IngestSubject(cfg.Site)) {
			return fmt.Errorf("the stolen box of %s has no link to the hub's ingest yet", cfg.Site)
		}
		return nil
	})
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, site)
	check.NoError(e.t, err)
	ctx := context.Background()
	_, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.StatusBucket, History: 1})
	check.NoError(e.t, err)
	for _, name := range streams.SiteStreams() {
		cfg := streams.SiteStreamConfig(name, site, streams.DefaultSiteLimits)
		// The attacker's edit: every site's subjects, not only its own.
		cfg.Subjects = []string{map[string]string{streams.TelemetryStream: "telemetry.>", streams.EventsStream: "events.>",
			streams.LogsStream: "logs.>"}[name]}
		_, err := js.CreateStream(ctx, cfg)
		check.NoError(e.t, err)
	}
	for _, name := range streams.Uplinks() {
		_, err := js.CreateOrUpdateConsumer(ctx, name, streams.UplinkConsumerConfig(site, name))
		check.NoError(e.t, err)
	}
	return js
}

// srcStreamHolds waits until stream holds a message on subj whose payload
// contains want.
func srcStreamHolds(t testing.TB, js jetstream.JetStream, stream, subj, want string) {
	t.Helper()
	check.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		s, err := js.Stream(context.Background(), stream)
		if err != nil {
			return err
		}
		m, err := s.GetLastMsgForSubject(context.Background(), subj)
		if err != nil {
			return fmt.Errorf("%s %s: %w", stream, subj, err)
		}
		if !bytes.Contains(m.Data, []byte(want)) {
			return fmt.Errorf("%s %s holds %q, want %q in it", stream, subj, m.Data, want)
		}
		return nil
	})
}

// srcScan counts the messages of a hub stream whose payload contains mark.
func srcScan(t testing.TB, js jetstream.JetStream, stream, mark string) (n int, subjects []string) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	check.NoError(t, err)
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	check.NoError(t, err)
	info, err := s.Info(ctx)
	check.NoError(t, err)
	for range info.State.Msgs {
		m, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
		check.NoError(t, err)
		if bytes.Contains(m.Data(), []byte(mark)) {
			n++
			subjects = append(subjects, m.Subject())
		}
	}
	return n, subjects
}

// Finding 3: a stolen site box (s1's leaf credentials, the attacker's own
// server and software) sends the hub's ingest status, telemetry, events and
// log lines under s2's name, both as s1 and as s2. The hub must keep none
// of it, and still take s1's own data.
func TestStolenBoxWritesAsAnotherSite(t *testing.T) {
	ctx := context.Background()
	e := srcNewEnv(t, "t1")
	bundle1 := e.addSite("s1", "t1", nil, "n1")
	bundle2 := e.addSite("s2", "t1", nil, "n1")
	_, hjs := e.admin("t1")

	// s2 is a genuine site with a genuine status.
	_, s2 := e.startLeaf(bundle2)
	s2st, err := s2.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	genuine, _ := json.Marshal(streams.NodeStatus{Site: "s2", Node: "n1", Blueprint: "genuine-s2", Phase: "Converged"})
	_, err = s2st.Put(ctx, "s2.n1", genuine)
	check.NoError(t, err)
	srcStreamHolds(t, hjs, streams.StatusStream, "$KV.status.s2.n1", "genuine-s2")

	// The thief answers on the inbox prefix the leaf's credentials allow.
	box, err := nats.Connect(e.stolenBox("s1", bundle1).Conn().ConnectedUrl(), nats.CustomInboxPrefix(streams.IngestReplyPrefix("s1")))
	check.NoError(t, err)
	t.Cleanup(box.Close)
	forged, _ := json.Marshal(streams.NodeStatus{Site: "s2", Node: "n1", Blueprint: "FORGED", Phase: "Converged"})
	const mark = "FORGED-by-stolen-s1"
	note := []byte(`{"value":99,"note":"` + mark + `"}`)
	forge := map[string][]streams.Record{
		streams.StatusStream: {{Seq: 1, Subject: "$KV.status.s2.n1", Data: forged}, {Seq: 2, Subject: "$KV.status.s2.n9", Data: forged},
			{Seq: 3, Subject: "$KV.status.*.n1", Data: forged}, {Seq: 4, Subject: "$KV.status.s1", Data: forged}},
		streams.TelemetryStream: {{Seq: 1, Subject: "telemetry.s2.n1.host.cpu", ID: "x", Data: note}},
		streams.EventsStream:    {{Seq: 1, Subject: "events.s2.n1.x", ID: "x", Data: note}, {Seq: 2, Subject: "alerts.s2.n1.stale", ID: "y", Data: note}},
		streams.LogsStream:      {{Seq: 1, Subject: "logs.s2.n1.unit.x", ID: "x", Data: note}},
	}
	// As s1: the ingest takes the batch (so the site's own data behind it
	// flows) but stores none of it. As s2: the hub's permissions keep the
	// request from the ingest altogether.
	for stream, recs := range forge {
		check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
			r, err := srcIngest(box, "s1", stream, recs...)
			if err != nil {
				return err
			}
			check.Equal(t, r.Stored, len(recs))
			return nil
		})
		if _, err := srcIngest(box, "s2", stream, recs...); err == nil {
			t.Errorf("the ingest answered s1's box asking as s2 (%s)", stream)
		}
		// An operation on a stream other than status is not the site's to send.
		if stream != streams.StatusStream {
			r, err := srcIngest(box, "s1", stream, streams.Record{Seq: 9, Subject: strings.Replace(recs[0].Subject, "s2", "s1", 1), Op: "PURGE", Data: note})
			check.NoError(t, err)
			check.Equal(t, r.Stored, 1)
		}
	}
	// A batch that does not decode is refused, naming the problem.
	r, err := srcIngest(box, "s1", streams.TelemetryStream)
	check.NoError(t, err)
	bad := nats.NewMsg(streams.IngestSubject("s1"))
	bad.Header.Set(streams.IngestStreamHeader, streams.TelemetryStream)
	bad.Data = []byte{0xff, 0xff, 0xff}
	m, err := box.RequestMsg(bad, 5*time.Second)
	check.NoError(t, err)
	check.NoError(t, json.Unmarshal(m.Data, &r))
	if !strings.Contains(r.Error, "malformed") {
		t.Errorf("malformed batch answered %+v", r)
	}
	// Then s1's own data, which the hub must still take.
	own, _ := json.Marshal(streams.NodeStatus{Site: "s1", Node: "n1", Blueprint: "own-s1", Phase: "Converged"})
	ownNote := []byte(`{"value":1,"note":"own-s1"}`)
	for stream, rec := range map[string]streams.Record{
		streams.StatusStream:    {Seq: 5, Subject: "$KV.status.s1.n1", Data: own},
		streams.TelemetryStream: {Seq: 2, Subject: "telemetry.s1.n1.host.cpu", ID: "s1-own-1", Data: ownNote},
		streams.EventsStream:    {Seq: 3, Subject: "events.s1.n1.x", ID: "s1-own-2", Data: ownNote},
		streams.LogsStream:      {Seq: 2, Subject: "logs.s1.n1.unit.x", ID: "s1-own-3", Data: ownNote},
	} {
		r, err := srcIngest(box, "s1", stream, rec)
		check.NoError(t, err)
		check.Equal(t, r.Stored, 1)
	}
	srcStreamHolds(t, hjs, streams.StatusStream, "$KV.status.s1.n1", "own-s1")
	srcStreamHolds(t, hjs, streams.TelemetryStream, "telemetry.s1.n1.host.cpu", "own-s1")
	srcStreamHolds(t, hjs, streams.EventsStream, "events.s1.n1.x", "own-s1")
	srcStreamHolds(t, hjs, streams.LogsStream, "logs.s1.n1.unit.x", "own-s1")

	hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	if en, err := hst.Get(ctx, "s2.n9"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("hub status has the invented node s2.n9 (%v): %s", err, srcValue(en))
	}
	en, err := hst.Get(ctx, "s2.n1")
	check.NoError(t, err)
	if !bytes.Contains(en.Value(), []byte("genuine-s2")) {
		t.Errorf("hub status of s2.n1 is %s, want s2's own", en.Value())
	}
	for _, stream := range []string{streams.TelemetryStream, streams.EventsStream, streams.StatusStream, streams.LogsStream} {
		if n, subjects := srcScan(t, hjs, stream, mark); n > 0 {
			t.Errorf("hub %s holds %d of the attacker's messages, on %v", stream, n, subjects)
		}
	}

	// Revoking s1 takes its status with it: nothing the thief wrote under
	// s1's name stays as live status.
	tenants, err := e.Op.RevokeSite("s1")
	check.NoError(t, err)
	for _, tn := range tenants {
		check.NoError(t, e.Op.Push(ctx, e.hub.ClientURL(), tn, e.tls()))
	}
	check.NoError(t, accounts.UnregisterSite(ctx, hjs, "s1"))
	if en, err := hst.Get(ctx, "s1.n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("revoked s1's status is still at the hub (%v): %s", err, srcValue(en))
	}
	en, err = hst.Get(ctx, "s2.n1")
	check.NoError(t, err)
	if !bytes.Contains(en.Value(), []byte("genuine-s2")) {
		t.Errorf("after revoking s1, hub status of s2.n1 is %s", en.Value())
	}
}

// srcIngest sends records to the hub's ingest as site, as a forwarder does.
func srcIngest(nc *nats.Conn, site, stream string, recs ...streams.Record) (streams.IngestReply, error) {
	req := nats.NewMsg(streams.IngestSubject(site))
	req.Header.Set(streams.IngestStreamHeader, stream)
	for _, r := range recs {
		req.Data = streams.AppendRecord(req.Data, r)
	}
	var reply streams.IngestReply
	m, err := nc.RequestMsg(req, 2*time.Second)
	if err != nil {
		return reply, err
	}
	return reply, json.Unmarshal(m.Data, &reply)
}

func srcValue(en jetstream.KeyValueEntry) string {
	if en == nil {
		return ""
	}
	return string(en.Value())
}
