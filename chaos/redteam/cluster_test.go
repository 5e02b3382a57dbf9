package redteam

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/streams"
)

// clMember is one `alpha hub` cluster member run by the cluster tests.
type clMember struct {
	*chaos.Proc
	clientURL string // from its "hub ready" line
	routeAddr string // 127.0.0.1:PORT
}

// clStartCluster runs three `alpha hub` members in operator mode with TLS
// and waits until all are ready. Client and leafnode listeners bind port -1
// (read back from the log); the route ports must be known to every member
// up front, so they are drawn at random and the whole start is retried when
// one of them turns out to be in use.
func clStartCluster(t *testing.T, dir string, pki tlsfiles.Files, opDir string) []*clMember {
	t.Helper()
	for attempt := range 5 {
		// Below Linux's ephemeral range (32768-60999), where outgoing
		// connections take ports of their own.
		base := 20000 + rand.IntN(12000)
		ports := []int{base, base + 1, base + 2}
		var members []*clMember
		for i, p := range ports {
			var routes []string
			for j, q := range ports {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", q))
				}
			}
			name := fmt.Sprintf("hub%d", i+1)
			m := &clMember{routeAddr: fmt.Sprintf("127.0.0.1:%d", p)}
			args := []string{"hub", "--name", name, "--store", filepath.Join(dir, fmt.Sprint(attempt), name),
				"--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1",
				"--cluster", m.routeAddr, "--routes", strings.Join(routes, ","),
				"--operator-dir", opDir, "--tls-cert", pki.Cert, "--tls-key", pki.Key, "--tls-ca", pki.CA,
				"--no-cloud"}
			m.Proc = chaos.Start(t, dir, fmt.Sprintf("%s-%d", name, attempt), args...)
			members = append(members, m)
		}
		inUse := false
		check.For(t, 90*time.Second, 50*time.Millisecond, func() error {
			ready := 0
			for _, m := range members {
				if m.CountLog("address already in use") > 0 {
					inUse = true
					return nil
				}
				if !m.Running() {
					return nil // reported below with its log
				}
				if m.CountLog("hub ready") > 0 {
					ready++
				}
			}
			if ready < len(members) {
				return fmt.Errorf("%d of %d members ready", ready, len(members))
			}
			return nil
		})
		if inUse {
			for _, m := range members {
				m.Stop()
			}
			t.Logf("route ports %d-%d: one was in use, retrying", ports[0], ports[2])
			continue
		}
		for _, m := range members {
			m.clientURL = chaos.LogField(m.WaitLog("hub ready", time.Second), "clients")
		}
		return members
	}
	t.Fatal("no free route ports after 5 attempts")
	return nil
}

// clRogue is a stock nats-server that an attacker points at a member's
// route port. It knows only public things: the cluster name (in the source)
// and the tenant's account public key (the issuer in any of the tenant's
// user JWTs, such as a site's leaf.creds). It serves that account locally,
// so whatever the cluster routes to it lands there.
func clRogue(t *testing.T, route string, account string, cluster func(*server.Options)) *server.Server {
	t.Helper()
	u, err := url.Parse("nats-route://" + route)
	check.NoError(t, err)
	acc := server.NewAccount(account)
	opts := &server.Options{
		ServerName: "rogue", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Cluster:  server.ClusterOpts{Name: "alpha-hub", Host: "127.0.0.1", Port: -1},
		Routes:   []*url.URL{u},
		Accounts: []*server.Account{acc},
		Users:    []*server.User{{Username: "spy", Password: "spy", Account: acc}},
	}
	if cluster != nil {
		cluster(opts)
	}
	s, err := server.NewServer(opts)
	check.NoError(t, err)
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("rogue server not ready")
	}
	return s
}

// clLoot is what a rogue server got within a window: routes to members and
// the marker, put at the hub while it listened.
type clLoot struct {
	routes int           // the most routes the rogue counted at once
	held   time.Duration // the longest it kept a route without a break
	marker bool
}

// clSpy connects to the rogue server as its local user, subscribes to
// everything in the tenant's account and calls put with the marker until
// the marker arrives or window passes. (Reading stored values through
// $JS.API from the rogue timed out even before the fix: each member imports
// the JetStream API for its own clients, so routes carry no interest in it.)
func clSpy(t *testing.T, rogue *server.Server, window time.Duration, marker string, put func(string)) clLoot {
	t.Helper()
	nc, err := nats.Connect(rogue.ClientURL(), nats.UserInfo("spy", "spy"))
	check.NoError(t, err)
	defer nc.Close()
	var caught atomic.Bool
	sub, err := nc.Subscribe(">", func(m *nats.Msg) {
		if strings.Contains(string(m.Data), marker) {
			caught.Store(true)
		}
	})
	check.NoError(t, err)
	defer sub.Unsubscribe()
	var loot clLoot
	var since time.Time // when the current unbroken run of routes began
	for deadline := time.Now().Add(window); time.Now().Before(deadline) && !loot.marker; {
		n := rogue.NumRoutes()
		loot.routes = max(loot.routes, n)
		switch {
		case n == 0:
			since = time.Time{}
		case since.IsZero():
			since = time.Now()
		default:
			loot.held = max(loot.held, time.Since(since))
		}
		put(marker)
		time.Sleep(200 * time.Millisecond) // the attacker's pace; the window bounds the wait
		loot.marker = caught.Load()
	}
	return loot
}

// A stock nats-server that reaches a hub member's route port must learn
// nothing of any tenant. Finding 9 of issue 12: the routes had neither TLS
// nor authentication, and such a server, knowing only the cluster's name
// and the tenant's account public key, joined the cluster and received
// the tenant's blueprints as they were put. Members now require mutual TLS
// against the CA and the operator directory's cluster secret; a server
// holding only one of the two (a site's certificate from the same CA, a
// leaked secret) is refused too. The last case, a server configured like a
// member, shows the spy does receive what reaches it.
func TestRogueRouteLearnsNothing(t *testing.T) {
	dir := t.TempDir()
	pki, err := testpki.Write(dir)
	check.NoError(t, err)
	op, err := accounts.Init(filepath.Join(dir, "operator"), "redteam", []string{"acme"})
	check.NoError(t, err)
	members := clStartCluster(t, dir, pki, op.Dir)
	ac, err := op.Account("acme")
	check.NoError(t, err)
	secret, err := op.ReadClusterSecret()
	check.NoError(t, err)

	nc, err := nats.Connect(members[0].clientURL, nats.UserCredentials(op.AdminCreds("acme")), nats.RootCAs(pki.CA))
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	check.NoError(t, err)
	ctx := context.Background()
	var kv jetstream.KeyValue
	check.For(t, 30*time.Second, 200*time.Millisecond, func() error {
		kv, err = js.KeyValue(ctx, streams.BlueprintsBucket)
		return err
	})
	put := func(v string) {
		if _, err := kv.Put(ctx, "s1.n1", []byte(v)); err != nil {
			t.Errorf("tenant admin's put: %v", err)
		}
	}
	memberTLS, err := pki.Route()
	check.NoError(t, err)
	client, err := tlsfiles.Files{CA: pki.CA}.Client()
	check.NoError(t, err)
	withTLS := func(c *tls.Config) func(*server.Options) {
		return func(o *server.Options) { o.Cluster.TLSConfig, o.Cluster.TLSTimeout = c, 5 }
	}
	withSecret := func(o *server.Options) {
		for _, u := range o.Routes {
			u.User = url.UserPassword(accounts.RouteUser, secret)
		}
	}
	for _, c := range []struct {
		name    string
		opts    []func(*server.Options)
		allowed bool
	}{
		{name: "plain, no credentials"},
		{name: "a certificate from the members' CA, no secret", opts: []func(*server.Options){withTLS(memberTLS)}},
		{name: "the secret, TLS without a certificate", opts: []func(*server.Options){withTLS(client), withSecret}},
		{name: "plain with the secret", opts: []func(*server.Options){withSecret}},
		{name: "configured like a member", opts: []func(*server.Options){withTLS(memberTLS), withSecret}, allowed: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			rogue := clRogue(t, members[1].routeAddr, ac.Subject, func(o *server.Options) {
				for _, f := range c.opts {
					f(o)
				}
			})
			marker := fmt.Sprintf("MARKER-%d", rand.Int64())
			window := 5 * time.Second
			if c.allowed {
				window = 30 * time.Second
			}
			loot := clSpy(t, rogue, window, marker, put)
			t.Logf("routes=%d held=%v marker received=%v", loot.routes, loot.held, loot.marker)
			// The rogue's own count may show a route for the moment between
			// its TLS handshake and the member refusing its CONNECT (seen
			// once under load: routes=1, no marker); a route that stays up
			// for two seconds, or any blueprint, is a join.
			if !c.allowed && (loot.marker || loot.held >= 2*time.Second) {
				t.Errorf("the rogue server joined the cluster (route held %v), acme's blueprint reached it: %v", loot.held, loot.marker)
			}
			if c.allowed && !loot.marker {
				t.Errorf("a server configured like a member got no blueprint in %v (routes %d): the spy cannot see what it should", window, loot.routes)
			}
		})
	}
	for _, m := range members {
		if n := m.CountLog(secret); n > 0 {
			t.Errorf("%s logged the cluster secret %d times", m.Name, n)
		}
	}
}
