package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// waitValue waits until a site's mirror, read with an agent's connection,
// holds want at key.
func waitValue(t *testing.T, nc *nats.Conn, site, key, want string) {
	t.Helper()
	js, err := jetstream.NewWithDomain(nc, site)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		kv, err := js.KeyValue(context.Background(), streams.BlueprintsBucket)
		if err != nil {
			return err
		}
		e, err := kv.Get(context.Background(), key)
		if err != nil {
			return err
		}
		if string(e.Value()) != want {
			return fmt.Errorf("%s = %q, want %q", key, e.Value(), want)
		}
		return nil
	})
}

// counter counts messages on a subscription.
type counter struct {
	n    atomic.Int64
	subj atomic.Value
}

func (c *counter) handler(m *nats.Msg) { c.n.Add(1); c.subj.Store(m.Subject) }

// mustFail asserts a request is refused (no responders, timeout or an API
// error), never answered with success.
func mustFail(t *testing.T, nc *nats.Conn, what, subj string, body []byte) {
	t.Helper()
	m, err := nc.Request(subj, body, 500*time.Millisecond)
	if err != nil {
		return
	}
	var resp struct {
		Error *struct{ Description string } `json:"error"`
	}
	if jerr := jsonUnmarshal(m.Data, &resp); jerr == nil && resp.Error != nil {
		return
	}
	t.Errorf("%s: %s was answered: %q", what, subj, m.Data)
}

// A stolen site box: site A's leaf credentials, in an attacker's own leaf
// node, cannot read B's blueprints, create consumers, speak for B or read
// the hub's telemetry.
func TestStolenSiteCredentials(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleA := e.addSite("a", "t1", "n1")
	bundleB := e.addSite("b", "t1", "n1")
	e.startLeaf(bundleA, nil)
	lb := e.startLeaf(bundleB, nil)
	adminNC, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "b.n1", []byte("b secret 1"))
	check.NoError(t, err)
	agentB := e.agentConn(lb, bundleB, "b", "n1")
	waitValue(t, agentB, "b", "b.n1", "b secret 1")

	creds := filepath.Join(bundleA, accounts.LeafCredsFile)

	// As a plain client the leaf credentials are refused outright.
	if nc, err := nats.Connect(e.hub.ClientURL(), nats.UserCredentials(creds), e.tls()); err == nil {
		nc.Close()
		t.Fatal("site A's leaf credentials connected to the hub as a client")
	}

	// The attacker runs their own leaf node with A's credentials.
	rogue := startRogueLeaf(t, e, creds)
	nc, err := nats.Connect(rogue.ClientURL())
	check.NoError(t, err)
	defer nc.Close()
	// The marker proves the rogue leaf is connected and its interest has
	// reached the hub. It goes first: the rogue learns its permissions from
	// the hub's INFO only after the link is up, and a forbidden subscription
	// sent before that gets the link cut for 30 s (the hub's answer to a
	// permission violation), which would hide a leak instead of showing one.
	marker := make(chan struct{}, 1)
	_, err = nc.Subscribe(streams.MirrorDeliver("a")+".marker", func(*nats.Msg) {
		select {
		case marker <- struct{}{}:
		default:
		}
	})
	check.NoError(t, err)
	check.NoError(t, nc.Flush())
	markerThrough := func(t *testing.T) {
		t.Helper()
		check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
			check.NoError(t, adminNC.Publish(streams.MirrorDeliver("a")+".marker", nil))
			select {
			case <-marker:
				return nil
			case <-time.After(50 * time.Millisecond):
				return fmt.Errorf("marker not through: the rogue leaf is not connected (%d leaf links)", rogue.NumLeafNodes())
			}
		})
	}
	markerThrough(t)
	var leak counter
	for _, s := range []string{"alpha.deliver.b.>", "$KV.blueprints.>", "$JS.b.API.>", "$JSC.R.>", "telemetry.>"} {
		_, err := nc.Subscribe(s, leak.handler)
		check.NoError(t, err)
	}
	check.NoError(t, nc.Flush())

	t.Run("read B's blueprints", func(t *testing.T) {
		js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
		check.NoError(t, err)
		if _, err := js.KeyValue(ctx, streams.BlueprintsBucket); err == nil {
			t.Error("opened the hub's blueprints bucket")
		}
		mustFail(t, nc, "direct get", "$JS.hub.API.DIRECT.GET.KV_blueprints.$KV.blueprints.b.n1", nil)
		mustFail(t, nc, "msg get", "$JS.hub.API.STREAM.MSG.GET.KV_blueprints", []byte(`{"last_by_subj":"$KV.blueprints.b.n1"}`))
		// A new revision for B reaches B's leaf, and nothing of it the
		// attacker: the marker sent after it arrives alone.
		_, err = hbp.Put(ctx, "b.n1", []byte("b secret 2"))
		check.NoError(t, err)
		waitValue(t, agentB, "b", "b.n1", "b secret 2")
		markerThrough(t)
		if n := leak.n.Load(); n > 0 {
			t.Fatalf("attacker received %d messages, last on %v", n, leak.subj.Load())
		}
	})

	t.Run("create a consumer without A's filter", func(t *testing.T) {
		cfg := []byte(`{"stream_name":"KV_blueprints","config":{"name":"evil","deliver_subject":"alpha.deliver.a.mirror.evil","ack_policy":"none"}}`)
		filtered := []byte(`{"stream_name":"KV_blueprints","config":{"name":"evil","deliver_subject":"alpha.deliver.a.mirror.evil","ack_policy":"none","filter_subject":"$KV.blueprints.>"}}`)
		mustFail(t, nc, "create", "$JS.hub.API.CONSUMER.CREATE.KV_blueprints", cfg)
		mustFail(t, nc, "create named", "$JS.hub.API.CONSUMER.CREATE.KV_blueprints.evil", cfg)
		mustFail(t, nc, "create filtered", "$JS.hub.API.CONSUMER.CREATE.KV_blueprints.evil.$KV.blueprints.>", filtered)
		mustFail(t, nc, "create durable", "$JS.hub.API.CONSUMER.DURABLE.CREATE.KV_blueprints.evil", cfg)
		mustFail(t, nc, "create on B's filter", "$JS.hub.API.CONSUMER.CREATE.KV_blueprints.evil.$KV.blueprints.b.>", filtered)
		mustFail(t, nc, "delete A's mirror consumer", "$JS.hub.API.CONSUMER.DELETE.KV_blueprints.mirror-a-blueprints", nil)
		mustFail(t, nc, "reset B's mirror consumer", "$JS.hub.API.CONSUMER.RESET.KV_blueprints.mirror-b-blueprints", []byte(`{}`))
		mustFail(t, nc, "inspect B's mirror consumer", "$JS.hub.API.CONSUMER.INFO.KV_blueprints.mirror-b-blueprints", nil)
		s, err := hjs.Stream(ctx, "KV_"+streams.BlueprintsBucket)
		check.NoError(t, err)
		var names []string
		for n := range s.ConsumerNames(ctx).Name() {
			names = append(names, n)
		}
		slices.Sort(names)
		if want := []string{"mirror-a-blueprints", "mirror-b-blueprints"}; !slices.Equal(names, want) {
			t.Fatalf("consumers on the hub's bucket: %v, want %v", names, want)
		}
	})

	t.Run("publish on B's telemetry or status subjects", func(t *testing.T) {
		// B's real leaf is connected: its uplink heartbeats and API calls
		// share these subjects, so what counts is the attacker's payload.
		var got counter
		forged := []byte(`{"phase":"Converged","by":"attacker"}`)
		for _, s := range []string{"telemetry.b.>", "$KV.status.b.>", "events.b.>", streams.IngestSubject("b"), "alpha.in.>", "$JS.hub.API.>"} {
			_, err := adminNC.Subscribe(s, func(m *nats.Msg) {
				if bytes.Contains(m.Data, []byte("attacker")) {
					got.handler(m)
				}
			})
			check.NoError(t, err)
		}
		done := make(chan struct{}, 1)
		_, err := adminNC.Subscribe(streams.IngestSubject("a"), func(m *nats.Msg) {
			if string(m.Data) == "marker" {
				done <- struct{}{}
			}
		})
		check.NoError(t, err)
		check.NoError(t, adminNC.Flush())
		// Give the hub's new interest time to reach the rogue leaf: the
		// marker subscription is the last one made, so once the marker
		// flows the others are in place too.
		for _, s := range []string{"telemetry.b.n1.cpu", "$KV.status.b.n1", "events.b.n1.drift",
			"alpha.in." + streams.StatusStream + ".$KV.status.b.n1", "$JS.hub.API.$KV.status.b.n1"} {
			check.NoError(t, nc.Publish(s, forged))
		}
		// B's uplink: a well-formed batch under B's name.
		batch := nats.NewMsg(streams.IngestSubject("b"))
		batch.Header.Set(streams.IngestStreamHeader, streams.StatusStream)
		batch.Data = streams.AppendRecord(nil, streams.Record{Seq: 1, Subject: "$KV.status.b.n1", Data: forged})
		check.NoError(t, nc.PublishMsg(batch))
		check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
			check.NoError(t, nc.Publish(streams.IngestSubject("a"), []byte("marker")))
			select {
			case <-done:
				return nil
			default:
				return errors.New("marker not through yet")
			}
		})
		if n := got.n.Load(); n > 0 {
			t.Fatalf("hub received %d messages the attacker published, last on %v", n, got.subj.Load())
		}
		hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
		check.NoError(t, err)
		if _, err := hst.Get(ctx, "b.n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("hub status of b.n1: %v", err)
		}
	})

	t.Run("read the hub's TELEMETRY", func(t *testing.T) {
		js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
		check.NoError(t, err)
		if _, err := js.Stream(ctx, streams.TelemetryStream); err == nil {
			t.Error("opened the hub's TELEMETRY stream")
		}
		mustFail(t, nc, "msg get", "$JS.hub.API.STREAM.MSG.GET.TELEMETRY", []byte(`{"seq":1}`))
		mustFail(t, nc, "direct get", "$JS.hub.API.DIRECT.GET.TELEMETRY", []byte(`{"seq":1}`))
		mustFail(t, nc, "consumer", "$JS.hub.API.CONSUMER.CREATE.TELEMETRY",
			[]byte(`{"stream_name":"TELEMETRY","config":{"deliver_subject":"alpha.deliver.a.mirror.t","ack_policy":"none"}}`))
		mustFail(t, nc, "source B's uplink", "$JS.b.API.CONSUMER.RESET.TELEMETRY.uplink-TELEMETRY", []byte(`{}`))
	})
}

// startRogueLeaf runs a plain leaf node (no JetStream, no auth) that joins
// the hub with the given credentials.
func startRogueLeaf(t *testing.T, e *env, creds string) *server.Server {
	t.Helper()
	u := mustURL(t, e.hub.LeafURL())
	opts := &server.Options{ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoSigs: true,
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 200 * time.Millisecond,
			Remotes: []*server.RemoteLeafOpts{{URLs: []*urlT{u}, Credentials: creds}}}}
	accounts.ScopedSubjects(opts)
	check.NoError(t, e.pki.Leaf(opts))
	opts.TLSConfig, opts.TLS = nil, false // the attacker's own clients need no TLS
	s, err := server.NewServer(opts)
	check.NoError(t, err)
	check.NoError(t, natsutil.Start(s, quiet()))
	t.Cleanup(s.Shutdown)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if s.NumLeafNodes() == 0 {
			return errors.New("rogue leaf not connected")
		}
		return nil
	})
	return s
}

// An agent reaches its own node's keys and nothing else at its leaf.
func TestAgentReachesOnlyItsOwnKey(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundle := e.addSite("a", "t1", "n1", "n2")
	l := e.startLeaf(bundle, nil)
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "a.n1", []byte("for n1"))
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "a.n2", []byte("for n2"))
	check.NoError(t, err)

	asyncErrs := make(chan error, 16)
	n1 := e.agentConn(l, bundle, "a", "n1", nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { asyncErrs <- err }))
	waitValue(t, e.agentConn(l, bundle, "a", "n2"), "a", "a.n2", "for n2") // n2's own read works
	waitValue(t, n1, "a", "a.n1", "for n1")

	js, err := jetstream.NewWithDomain(n1, "a")
	check.NoError(t, err)
	kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if en, err := kv.Get(short, "a.n2"); err == nil {
		t.Errorf("agent n1 read a.n2: %q", en.Value())
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if w, err := kv.Watch(wctx, "a.n2"); err == nil {
		select {
		case en := <-w.Updates():
			if en != nil {
				t.Errorf("agent n1 watched a.n2: %q", en.Value())
			}
		case <-wctx.Done():
		}
		w.Stop()
	}
	short2, cancelShort2 := context.WithTimeout(ctx, time.Second)
	defer cancelShort2()
	if _, err := kv.ListKeys(short2); err == nil {
		// ListKeys needs an unfiltered consumer.
		t.Error("agent n1 listed the bucket's keys")
	}
	mustFail(t, n1, "msg get", "$JS.a.API.STREAM.MSG.GET.KV_blueprints", []byte(`{"last_by_subj":"$KV.blueprints.a.n2"}`))
	mustFail(t, n1, "direct get", "$JS.API.DIRECT.GET.KV_blueprints.$KV.blueprints.a.n2", nil)

	// Its own status key is writable, another node's is not.
	st, err := js.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	_, err = st.Put(ctx, "a.n1", []byte(`{}`))
	check.NoError(t, err)
	short3, cancelShort3 := context.WithTimeout(ctx, time.Second)
	defer cancelShort3()
	if _, err := st.Put(short3, "a.n2", []byte(`{"phase":"Converged"}`)); err == nil {
		t.Error("agent n1 wrote a.n2's status")
	}
	// Another node's inbox cannot be subscribed to.
	_, err = n1.Subscribe(accounts.AgentInbox("a", "n2")+".>", func(*nats.Msg) {})
	check.NoError(t, err)
	check.NoError(t, n1.Flush())
	select {
	case err := <-asyncErrs:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("async error %v, want a permission violation", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("subscribing to n2's inbox was not refused")
	}
	// Without credentials nobody gets in.
	if nc, err := nats.Connect(l.ClientURL(), e.tls()); err == nil {
		nc.Close()
		t.Error("connected to the leaf without credentials")
	}
}

// Two tenants share the hub and the same site: neither sees the other's
// blueprints, status or traffic.
func TestTenantsAreIsolated(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "x", "y")
	bx := e.addSite("s", "x", "n1")
	by := e.addSite("s", "y", "n1")
	lx := e.startLeaf(bx, nil)
	ly := e.startLeaf(by, nil)
	xnc, xjs := e.admin("x")
	ync, yjs := e.admin("y")
	xbp, err := xjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = xbp.Put(ctx, "s.n1", []byte("x's blueprint"))
	check.NoError(t, err)
	ybp, err := yjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = ybp.Put(ctx, "s.n1", []byte("y's blueprint"))
	check.NoError(t, err)
	// Each tenant's leaf at the shared site holds its own tenant's value.
	ax := e.agentConn(lx, bx, "s", "n1")
	ay := e.agentConn(ly, by, "s", "n1")
	waitValue(t, ax, "s", "s.n1", "x's blueprint")
	waitValue(t, ay, "s", "s.n1", "y's blueprint")
	// x's status flows to x's hub account only.
	sjs, _ := jetstream.NewWithDomain(ax, "s")
	sst, err := sjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	_, err = sst.Put(ctx, "s.n1", []byte(`{"tenant":"x"}`))
	check.NoError(t, err)
	xst, err := xjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error { _, err := xst.Get(ctx, "s.n1"); return err })
	yst, err := yjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	if en, err := yst.Get(ctx, "s.n1"); err == nil {
		t.Errorf("tenant y sees status %q", en.Value())
	}
	// y's administrator listens to everything while x's traffic flows.
	// y's account has traffic of its own (its site's mirror heartbeats on
	// the same deliver subject names), so what counts is x's content.
	var seen counter
	_, err = ync.Subscribe(">", func(m *nats.Msg) {
		if m.Subject == "x.private" || bytes.Contains(m.Data, []byte("x's blueprint")) ||
			bytes.Contains(m.Data, []byte("x only")) || bytes.Contains(m.Data, []byte(`"tenant":"x"`)) {
			seen.handler(m)
		}
	})
	check.NoError(t, err)
	check.NoError(t, ync.Flush())
	xgot := make(chan struct{}, 1)
	_, err = xnc.Subscribe("x.private", func(*nats.Msg) { xgot <- struct{}{} })
	check.NoError(t, err)
	check.NoError(t, xnc.Flush())
	check.NoError(t, xnc.Publish("x.private", []byte("x only")))
	_, err = xbp.Put(ctx, "s.n1", []byte("x's blueprint 2"))
	check.NoError(t, err)
	waitValue(t, ax, "s", "s.n1", "x's blueprint 2")
	<-xgot
	check.NoError(t, ync.Flush())
	if n := seen.n.Load(); n > 0 {
		t.Fatalf("tenant y saw %d of x's messages, last on %v", n, seen.subj.Load())
	}
	// y's buckets hold y's value only; x's mirror at the site holds x's.
	en, err := ybp.Get(ctx, "s.n1")
	check.NoError(t, err)
	check.Equal(t, string(en.Value()), "y's blueprint")
	waitValue(t, ay, "s", "s.n1", "y's blueprint")
	// x's credentials see nothing of y's account: its TELEMETRY holds only
	// x's own stream state, and y's admin creds are not x's.
	for _, tn := range []string{"x", "y"} {
		_, js := e.admin(tn)
		kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
		check.NoError(t, err)
		keys, err := kv.ListKeys(ctx)
		check.NoError(t, err)
		var all []string
		for k := range keys.Keys() {
			all = append(all, k)
		}
		if len(all) != 1 || all[0] != "s.n1" {
			t.Errorf("tenant %s keys %v", tn, all)
		}
	}
}

// A revoked site's leaf is disconnected at once and refused when it tries
// again, while the hub keeps running.
func TestRevokedSiteIsCutOff(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundle := e.addSite("a", "t1", "n1")
	var log check.Buffer
	l := e.startLeaf(bundle, &log)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !l.Connected() {
			return errors.New("leaf not connected")
		}
		return nil
	})
	before := log.Count("Authorization Violation")
	tenants, err := e.op.RevokeSite("a")
	check.NoError(t, err)
	check.Equal(t, len(tenants), 1)
	start := time.Now()
	sys, err := e.op.SysConn(e.hub.ClientURL(), e.tls())
	check.NoError(t, err)
	defer sys.Close()
	check.NoError(t, e.op.PushSite(ctx, sys, "t1", "a"))
	_, hjs := e.admin("t1")
	check.NoError(t, accounts.UnregisterSite(ctx, hjs, "a"))
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if l.Connected() || e.hub.Server.NumLeafNodes() > 0 {
			return errors.New("leaf still connected")
		}
		return nil
	})
	t.Logf("disconnected %v after the push", time.Since(start))
	// It keeps trying (every 500 ms) and is refused each time.
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if n := log.Count("Authorization Violation") - before; n < 3 {
			return fmt.Errorf("%d refusals so far", n)
		}
		return nil
	})
	if l.Connected() || e.hub.Server.NumLeafNodes() > 0 {
		t.Fatal("revoked leaf got back in")
	}
	// Sources for the site are gone from the hub's streams.
	s, err := hjs.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	info, err := s.Info(ctx)
	check.NoError(t, err)
	check.Equal(t, len(info.Config.Sources), 0)
}

// A site's account is its own boundary, below the leaf user's permissions:
// a client of site A's account with no permission limits at all (as if
// LeafPermissions had a hole) reaches A's mirror consumers, A's deliveries
// and the ingest under A's name, and nothing else of the tenant.
func TestSiteAccountHoldsOnlyItsImports(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	e.addSite("a", "t1", "n1")
	bundleB := e.addSite("b", "t1", "n1")
	lb := e.startLeaf(bundleB, nil)
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)

	creds := filepath.Join(t.TempDir(), "probe.creds")
	_, err = e.op.IssueUser(accounts.SiteAccount("t1", "a"), "probe", creds, jwt.Permissions{})
	check.NoError(t, err)
	nc, err := nats.Connect(e.hub.ClientURL(), nats.UserCredentials(creds), e.tls())
	check.NoError(t, err)
	defer nc.Close()
	var mu sync.Mutex
	var seen []string
	record := func(m *nats.Msg) {
		// Answer A's consumers' flow control (through the account's
		// import), or they stall.
		if strings.HasPrefix(m.Reply, "$JS.FC.") {
			_ = m.Respond(nil)
		}
		mu.Lock()
		seen = append(seen, m.Subject+" "+string(m.Data))
		mu.Unlock()
	}
	// Interest in an imported stream is made per subscription: these are
	// what a hole would show up on. A's deliver subject is literal, as the
	// leaf's subscription is (a push consumer is told of literal interest).
	for _, s := range []string{"alpha.deliver.>", streams.MirrorDeliver("a") + ".blueprints", "alpha.deliver.b.>", "$KV.>",
		"$JSC.R.>", "$JS.FC.>", "alpha.in.>", "telemetry.>", "alpha.reply.>"} {
		_, err = nc.Subscribe(s, record)
		check.NoError(t, err)
	}
	check.NoError(t, nc.Flush())

	// The probe works: A's own consumer answers its reset.
	m, err := nc.Request("$JS.hub.API.CONSUMER.RESET.KV_blueprints.mirror-a-blueprints", []byte(`{}`), 5*time.Second)
	check.NoError(t, err)
	if !bytes.Contains(m.Data, []byte(`"name":"mirror-a-blueprints"`)) || bytes.Contains(m.Data, []byte(`"error"`)) {
		t.Fatalf("reset of A's own consumer: %s", m.Data)
	}
	for _, api := range []string{"$JS.hub.API.", "$JS.API."} {
		mustFail(t, nc, "reset B's consumer", api+"CONSUMER.RESET.KV_blueprints.mirror-b-blueprints", []byte(`{}`))
		mustFail(t, nc, "stream info", api+"STREAM.INFO.KV_blueprints", nil)
		mustFail(t, nc, "list streams", api+"STREAM.LIST", nil)
		mustFail(t, nc, "direct get", api+"DIRECT.GET.KV_blueprints.$KV.blueprints.b.n1", nil)
		mustFail(t, nc, "create a consumer", api+"CONSUMER.CREATE.KV_blueprints",
			[]byte(`{"stream_name":"KV_blueprints","config":{"deliver_subject":"alpha.deliver.a.mirror.x","ack_policy":"none"}}`))
		mustFail(t, nc, "delete A's consumer", api+"CONSUMER.DELETE.KV_blueprints.mirror-a-blueprints", nil)
	}
	// B's uplink, under B's name: nothing reaches the hub.
	forged := []byte(`{"phase":"Converged","by":"attacker"}`)
	batch := nats.NewMsg(streams.IngestSubject("b"))
	batch.Header.Set(streams.IngestStreamHeader, streams.StatusStream)
	batch.Data = streams.AppendRecord(nil, streams.Record{Seq: 1, Subject: "$KV.status.b.n1", Data: forged})
	if _, err := nc.RequestMsg(batch, time.Second); err == nil {
		t.Error("the ingest answered a batch under B's name")
	}

	// B's next revision reaches B and nothing of it the probe: a revision
	// for A put after it arrives at the probe alone.
	_, err = hbp.Put(ctx, "b.n1", []byte("b secret"))
	check.NoError(t, err)
	waitValue(t, e.agentConn(lb, bundleB, "b", "n1"), "b", "b.n1", "b secret")
	_, err = hbp.Put(ctx, "a.n1", []byte("a marker"))
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range seen {
			if strings.Contains(s, "a marker") {
				return nil
			}
		}
		return fmt.Errorf("A's revision not delivered to A's account (%d messages)", len(seen))
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range seen {
		if strings.Contains(s, "b secret") || strings.Contains(s, ".b.") || strings.Contains(s, "mirror-b") {
			t.Errorf("site A's account received %.200q", s)
		}
	}
	hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	if _, err := hst.Get(ctx, "b.n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("hub status of b.n1: %v", err)
	}
}
