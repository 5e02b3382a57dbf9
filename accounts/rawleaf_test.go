package accounts_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// rawLeaf is a leafnode connection spoken by hand, as a stolen site box
// can: it sends what no nats-server leaf would (replies of its choosing).
type rawLeaf struct {
	t     *testing.T
	conn  net.Conn
	in    chan string
	pongs atomic.Int32 // PONGs from the hub; counted apart from in, which drops when full
}

// dialRawLeaf connects to the hub's leafnode port with a bundle's leaf
// credentials.
func dialRawLeaf(t *testing.T, e *env, creds string) *rawLeaf {
	t.Helper()
	u, err := url.Parse(e.hub.LeafURL())
	check.NoError(t, err)
	c, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	check.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	check.NoError(t, err)
	var info struct {
		Nonce string `json:"nonce"`
	}
	check.NoError(t, json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(line), "INFO ")), &info))
	tc, err := e.pki.Client()
	check.NoError(t, err)
	tc.ServerName = u.Hostname()
	tlsConn := tls.Client(c, tc)
	check.NoError(t, tlsConn.Handshake())
	raw, err := os.ReadFile(creds)
	check.NoError(t, err)
	ujwt, err := jwt.ParseDecoratedJWT(raw)
	check.NoError(t, err)
	kp, err := nkeys.ParseDecoratedNKey(raw)
	check.NoError(t, err)
	sig, err := kp.Sign([]byte(info.Nonce))
	check.NoError(t, err)
	connect, _ := json.Marshal(map[string]any{"jwt": ujwt, "sig": base64.RawURLEncoding.EncodeToString(sig),
		"name": "rawleaf", "headers": true, "compress_mode": "off"})
	_, err = fmt.Fprintf(tlsConn, "CONNECT %s\r\nPING\r\n", connect)
	check.NoError(t, err)
	l := &rawLeaf{t: t, conn: tlsConn, in: make(chan string, 1024)}
	go func() {
		r := bufio.NewReader(tlsConn)
		for {
			s, err := r.ReadString('\n')
			if err != nil {
				close(l.in)
				return
			}
			if strings.HasPrefix(s, "PING") {
				fmt.Fprintf(tlsConn, "PONG\r\n")
			}
			if strings.HasPrefix(s, "PONG") {
				l.pongs.Add(1)
			}
			select {
			case l.in <- s:
			default:
			}
		}
	}()
	return l
}

// send publishes data on subject with reply as the leaf.
func (l *rawLeaf) send(subject, reply string, hdr map[string]string, data []byte) {
	l.t.Helper()
	var h string
	if len(hdr) > 0 {
		h = "NATS/1.0\r\n"
		for k, v := range hdr {
			h += k + ": " + v + "\r\n"
		}
		h += "\r\n"
	}
	var err error
	if h == "" {
		_, err = fmt.Fprintf(l.conn, "LMSG %s %s %d\r\n%s\r\n", subject, reply, len(data), data)
	} else {
		_, err = fmt.Fprintf(l.conn, "HMSG %s %s %d %d\r\n%s%s\r\n", subject, reply, len(h), len(h)+len(data), h, data)
	}
	check.NoError(l.t, err)
}

// A stolen site box speaking the leafnode protocol itself can give a
// request the reply $JS.ACK.<tokens>@<subject>, and nats-server hands the
// message to its subscriber under <subject>, past the permission that was
// checked on the subject it was sent on. Site A sends its own uplink
// subject with such a reply naming B's, and its own mirror consumer's
// reset naming the deletion of the tenant's cloud bucket: B's status stays
// unwritten and the bucket stays. (Before the hub's handlers dropped these
// replies, B's forged status was stored and KV_cloud deleted.) A's honest
// requests on the same connection still work, so the link was live.
func TestSiteCannotRedirectRequests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleA := e.addSite("a", "t1", "n1")
	e.addSite("b", "t1", "n1")
	_, hjs := e.admin("t1")
	hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)

	l := dialRawLeaf(t, e, filepath.Join(bundleA, accounts.LeafCredsFile))
	status := func(key, by string) []byte {
		return streams.AppendRecord(nil, streams.Record{Seq: 1, Subject: "$KV.status." + key, Data: []byte(`{"phase":"Converged","by":"` + by + `"}`)})
	}
	hdr := map[string]string{streams.IngestStreamHeader: streams.StatusStream}
	redirect := "$JS.ACK.1.2.3.4.5.6.7@"
	// The link is up once an honest batch of A's is stored.
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		l.send(streams.IngestSubject("a"), streams.IngestReplyPrefix("a")+".1", hdr, status("a.n1", "honest"))
		_, err := hst.Get(ctx, "a.n1")
		return err
	})
	l.send(streams.IngestSubject("a"), redirect+streams.IngestSubject("b"), hdr, status("b.n1", "attacker"))
	l.send("$JS.hub.API.CONSUMER.RESET.KV_blueprints.mirror-a-blueprints", redirect+"$JS.API.STREAM.DELETE.KV_cloud", nil, []byte("{}"))
	l.send("$JS.hub.API.CONSUMER.RESET.KV_blueprints.mirror-a-blueprints", redirect+streams.ResetSubject("KV_cloud", "mirror-b-cloud"), nil, []byte("{}"))
	// Then an honest one again: once it is stored, the ones sent before it
	// on this connection have reached the ingest and the gateway (a forged
	// one is dropped before any work, so a worker is done with it first).
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		l.send(streams.IngestSubject("a"), streams.IngestReplyPrefix("a")+".2", hdr, status("a.n1", "honest again"))
		en, err := hst.Get(ctx, "a.n1")
		if err != nil {
			return err
		}
		if !strings.Contains(string(en.Value()), "honest again") {
			return fmt.Errorf("a.n1 = %s", en.Value())
		}
		return nil
	})
	// A span in which nothing may happen, not a wait for something: a
	// forged store or a deletion would have landed by now.
	time.Sleep(500 * time.Millisecond)
	if en, err := hst.Get(ctx, "b.n1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("B's status at the hub: %v %s", err, valueOf(en))
	}
	if _, err := hjs.Stream(ctx, "KV_"+streams.CloudBucket); err != nil {
		t.Errorf("the tenant's cloud bucket: %v", err)
	}
	if e.log.Count("refused a site request that tried to redirect it") == 0 {
		t.Error("the hub logged no refused request")
	}
}

func valueOf(en jetstream.KeyValueEntry) string {
	if en == nil {
		return ""
	}
	return string(en.Value())
}

// subscribe sends n subscriptions (LS+) named by sub(i) and waits until the
// hub has taken them (its PONG to a PING sent after them).
func (l *rawLeaf) subscribe(n int, sub func(i int) string) {
	l.t.Helper()
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "LS+ %s\r\n", sub(i))
	}
	// The PONG to the PING sent with CONNECT first, so the one counted
	// below answers the PING sent after the subscriptions.
	check.For(l.t, 30*time.Second, 20*time.Millisecond, func() error {
		if l.pongs.Load() == 0 {
			return errors.New("no PONG to CONNECT yet")
		}
		return nil
	})
	before := l.pongs.Load()
	_, err := fmt.Fprintf(l.conn, "%sPING\r\n", b.String())
	check.NoError(l.t, err)
	check.For(l.t, 30*time.Second, 20*time.Millisecond, func() error {
		if l.pongs.Load() <= before {
			return errors.New("no PONG after the subscriptions yet")
		}
		return nil
	})
}

// leafSubs is how many subscriptions the hub holds for the leaf link named
// name (-1: no such link).
func leafSubs(t *testing.T, e *env, name string) int {
	t.Helper()
	lz, err := e.hub.Server.Leafz(&server.LeafzOptions{})
	check.NoError(t, err)
	for _, l := range lz.Leafs {
		if l.Name == name {
			return int(l.NumSubs)
		}
	}
	return -1
}

// A stolen site box can send the hub any number of wildcard subscriptions
// over its leaf link (nats-server checks a leaf's literal subscriptions
// against its permissions, not wildcard ones), and each costs the hub
// memory. The site's account caps them: the hub holds no more than
// SiteMaxSubs for a link and SiteMaxLinks links for the bundle, and another
// site's leaf keeps getting its blueprints. An honest leaf holds far fewer.
func TestSiteLeafSubscriptionsAreCapped(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleA := e.addSite("a", "t1", "n1")
	bundleB := e.addSite("b", "t1", "n1")
	agent, hbp := linkedSite(t, e, bundleB, "b", "first")
	honest := leafSubs(t, e, "leaf-b")
	t.Logf("an honest leaf with one agent: %d subscriptions at the hub", honest)
	if honest <= 0 || honest > accounts.SiteMaxSubs/8 {
		t.Fatalf("honest leaf holds %d subscriptions at the hub; the cap %d leaves it too little room", honest, accounts.SiteMaxSubs)
	}

	l := dialRawLeaf(t, e, filepath.Join(bundleA, accounts.LeafCredsFile))
	l.subscribe(4*accounts.SiteMaxSubs, func(i int) string { return fmt.Sprintf("flood.%d.*", i) })
	if n := leafSubs(t, e, "rawleaf"); n < 0 || n > accounts.SiteMaxSubs {
		t.Errorf("the hub holds %d subscriptions for the flooding leaf, want at most %d", n, accounts.SiteMaxSubs)
	}
	if e.log.Count("maximum subscriptions exceeded") == 0 {
		t.Error("the hub logged no refused subscription")
	}
	// A second link with the same bundle is capped the same way; a third
	// is refused (the account's link limit), so one stolen bundle holds
	// at most SiteMaxLinks x SiteMaxSubs.
	l2 := dialRawLeaf(t, e, filepath.Join(bundleA, accounts.LeafCredsFile))
	l2.subscribe(2*accounts.SiteMaxSubs, func(i int) string { return fmt.Sprintf("flood2.%d.*", i) })
	dialRawLeaf(t, e, filepath.Join(bundleA, accounts.LeafCredsFile)).waitClosed()
	lz, err := e.hub.Server.Leafz(&server.LeafzOptions{})
	check.NoError(t, err)
	links, held := 0, 0
	for _, lf := range lz.Leafs {
		if lf.Name == "rawleaf" {
			links++
			held += int(lf.NumSubs)
		}
	}
	if links != accounts.SiteMaxLinks || held > accounts.SiteMaxLinks*accounts.SiteMaxSubs {
		t.Errorf("one bundle holds %d links and %d subscriptions at the hub, want %d links and at most %d",
			links, held, accounts.SiteMaxLinks, accounts.SiteMaxLinks*accounts.SiteMaxSubs)
	}
	_, err = hbp.Put(ctx, "b.n1", []byte("second"))
	check.NoError(t, err)
	waitValue(t, agent, "b", "b.n1", "second")
}

// A site account made before the caps holds no limit on its links; `alpha
// accounts refresh` signs it again with them (and nothing else: no bundle
// is issued) and pushes it: a stolen bundle that could open a third link
// before is refused one after, while the site's genuine leaf keeps its link
// and its blueprints. A second refresh changes nothing.
func TestRefreshCapsSiteAccountsMadeBefore(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleA := e.addSite("a", "t1", "n1")
	check.NoError(t, e.op.DropSiteCaps("t1", "a"))
	sys, err := e.op.SysConn(e.hub.ClientURL(), e.tls())
	check.NoError(t, err)
	defer sys.Close()
	check.NoError(t, e.op.PushSite(ctx, sys, "t1", "a"))
	agent, hbp := linkedSite(t, e, bundleA, "a", "before")
	creds := filepath.Join(bundleA, accounts.LeafCredsFile)
	links := func() int {
		lz, err := e.hub.Server.Leafz(&server.LeafzOptions{})
		check.NoError(t, err)
		n := 0
		for _, lf := range lz.Leafs {
			if lf.Name == "rawleaf" {
				n++
			}
		}
		return n
	}
	// Uncapped: two stolen links beside the genuine one.
	for range 2 {
		dialRawLeaf(t, e, creds).subscribe(1, func(int) string { return "probe.*" })
	}
	if n := links(); n != 2 {
		t.Fatalf("before the refresh the hub holds %d stolen links, want 2 (uncapped)", n)
	}

	changed, err := e.op.Refresh()
	check.NoError(t, err)
	if len(changed) != 1 || changed[0] != accounts.SiteAccount("t1", "a") {
		t.Fatalf("refresh signed %v again, want only a's site account", changed)
	}
	for _, name := range changed {
		j, err := e.op.AccountJWT(name)
		check.NoError(t, err)
		check.NoError(t, accounts.PushJWT(ctx, sys, j))
	}
	// The links already open stay (nats-server applies a lower limit to
	// new ones); a new link finds the account over its cap of 2.
	dialRawLeaf(t, e, creds).waitClosed()
	_, err = hbp.Put(ctx, "a.n1", []byte("after"))
	check.NoError(t, err)
	waitValue(t, agent, "a", "a.n1", "after")
	again, err := e.op.Refresh()
	check.NoError(t, err)
	if len(again) != 0 {
		t.Errorf("a second refresh signed %v again, want none", again)
	}
}

// waitClosed waits until the hub has closed the connection (a refused
// link).
func (l *rawLeaf) waitClosed() {
	l.t.Helper()
	check.For(l.t, 10*time.Second, 20*time.Millisecond, func() error {
		for {
			select {
			case _, ok := <-l.in:
				if !ok {
					return nil
				}
			default:
				return errors.New("the hub keeps the link open")
			}
		}
	})
}

// linkedSite starts the genuine leaf of a site's bundle with its node n1's
// agent, puts value for n1 at the hub and waits until the agent reads it;
// it returns the agent's connection and the hub's blueprints bucket.
func linkedSite(t *testing.T, e *env, bundle, site, value string) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	l := e.startLeaf(bundle, nil)
	agent := e.agentConn(l, bundle, site, "n1")
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(context.Background(), site+".n1", []byte(value))
	check.NoError(t, err)
	waitValue(t, agent, site, site+".n1", value)
	return agent, hbp
}
