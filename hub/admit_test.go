package hub

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
)

// Forty uplinks starting their TLS handshake at once on a hub that
// admits 5 a second: the burst and what refills while a handshake may
// wait are taken, the rest are refused before any key exchange (so they
// retry instead of all running into their deadlines), and once the burst
// has passed a new uplink is taken again.
func TestLeafHandshakesAdmittedAtARate(t *testing.T) {
	pki, err := testpki.Write(t.TempDir())
	check.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(pki.Cert, pki.Key)
	check.NoError(t, err)
	server := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	newGate(t.Context(), 5).install(server)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", server) // the test's own listener, kept open
	check.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake() //nolint:errcheck // the client side counts
			}()
		}
	}()
	caPEM, err := os.ReadFile(pki.CA)
	check.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	dial := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
		if err == nil {
			c.Close()
		}
		return err
	}

	var mu sync.Mutex
	var ok, refused int
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := dial()
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else {
				refused++
			}
		}()
	}
	wg.Wait()
	// 5 at once, 5 a second over the 4 s a handshake may wait: at most
	// 25 (and a little for the clock), at least the burst.
	if ok < 5 || ok > 26 || refused == 0 {
		t.Fatalf("40 at once: %d taken, %d refused; want 5-26 taken and the rest refused", ok, refused)
	}
	check.For(t, 5*time.Second, 200*time.Millisecond, dial)
}

// The rate follows what a connect costs: a tenant twice the size is
// admitted half as often, never faster than the configured ceiling nor
// slower than one a second.
func TestGateRateFollowsWalk(t *testing.T) {
	g := newGate(t.Context(), 50)
	for _, c := range []struct {
		subs, cores int
		want        float64
	}{
		{0, 2, 50},                             // nothing known yet: the ceiling
		{1_300, 2, 50},                         // 100 sites: cheap, the ceiling
		{13_000, 2, 2 * walkBudget / 13_000.0}, // 1,000 sites
		{26_000, 2, 2 * walkBudget / 26_000.0}, // twice the walk, half the rate
		{26_000, 4, 4 * walkBudget / 26_000.0}, // twice the cores, twice the rate
		{1 << 30, 1, 1},                        // floor
	} {
		g.setWalk(c.subs, c.cores, 1)
		if got := float64(g.lim.Limit()); math.Abs(got-c.want) > 1e-9 || g.lim.Burst() != int(math.Ceil(c.want)) {
			t.Errorf("setWalk(%d subs, %d cores): %v a second in bursts of %d; want %v", c.subs, c.cores, got, g.lim.Burst(), c.want)
		}
	}
}

// A hub that wakes late admits half as fast a second later, down to a
// floor, and gives it back in tenths while it keeps up.
func TestGateLoadFollowsLag(t *testing.T) {
	load := 1.0
	for range 10 {
		load = nextLoad(load, 2*lagLimit)
	}
	if load != minLoad {
		t.Fatalf("after 10 late seconds: load %v, want the floor %v", load, minLoad)
	}
	load = nextLoad(0.5, lagLimit/2)
	if math.Abs(load-0.6) > 1e-9 {
		t.Fatalf("a second on time after 0.5: %v, want 0.6", load)
	}
	for range 20 {
		load = nextLoad(load, 0)
	}
	if load != 1 {
		t.Fatalf("after 20 seconds on time: %v, want 1", load)
	}
	g := newGate(t.Context(), 50)
	g.setWalk(0, 2, 0.25)
	if got := float64(g.lim.Limit()); got != 12.5 {
		t.Fatalf("a quarter of 50 a second: %v", got)
	}
}

// Sources take turns: a site's one handshake behind a hundred from one
// flooding source is admitted on the next turn but one, not after the
// hundred (20 s at 5 a second, past the 4 s it may wait).
func TestGateTakesSourcesInTurn(t *testing.T) {
	g := newGate(t.Context(), 5)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	for range 5 { // the burst
		check.NoError(t, g.admit(ctx, "burst"))
	}
	flood := make(chan error, 100)
	for range 100 {
		go func() { flood <- g.admit(ctx, "10.0.0.66") }()
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if n := len(g.queues["10.0.0.66"]); n < 90 {
			return fmt.Errorf("%d of the flood queued", n)
		}
		return nil
	})
	start := time.Now()
	if err := g.admit(ctx, "10.0.0.1"); err != nil {
		t.Fatalf("a site behind a flood of 100: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a site behind a flood of 100 waited %v; want its turn within two (0.4 s at 5 a second)", d)
	}
	cancel()
	for range 100 {
		<-flood
	}
}

// A source past its share of the queue is held, not queued, and refused;
// past what the gate holds, refused at once: whoever floods the port
// cannot make the hub hold a socket and a goroutine for each attempt.
func TestGateBoundsWhatOneSourceHolds(t *testing.T) {
	g := newGate(t.Context(), 1)
	g.perSource = 3
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	check.NoError(t, g.admit(ctx, "a")) // the burst
	g.lim.SetLimit(0.01)                // no more turns in this test
	queued := make(chan error, 3)
	for range 3 {
		go func() { queued <- g.admit(ctx, "a") }()
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.queued != 3 {
			return fmt.Errorf("%d queued", g.queued)
		}
		return nil
	})
	hctx, hcancel := context.WithCancel(ctx)
	heldErr := make(chan error, 1)
	go func() { heldErr <- g.admit(hctx, "a") }()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.held != 1 || g.queued != 3 {
			return fmt.Errorf("%d held, %d queued; want the fourth held, not queued", g.held, g.queued)
		}
		return nil
	})
	hcancel()
	if err := <-heldErr; !errors.Is(err, errHubBusy) {
		t.Fatalf("fourth from one source: %v, want refused", err)
	}

	g.mu.Lock()
	g.held = maxHeld
	g.mu.Unlock()
	start := time.Now()
	if err := g.admit(ctx, "a"); !errors.Is(err, errHubBusy) {
		t.Fatalf("past what the gate holds: %v, want refused", err)
	}
	if d := time.Since(start); d > admitWait/2 {
		t.Fatalf("past what the gate holds: refused after %v, want at once", d)
	}
	cancel()
	for range 3 {
		<-queued
	}
}

// Who a handshake comes from: an IPv4 address, or an IPv6 /64.
func TestSourceOf(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7:4444":         "192.0.2.7",
		"[2001:db8:1:2:3::9]:1":  "2001:db8:1:2::",
		"[2001:db8:1:2:ff::]:80": "2001:db8:1:2::",
		"[::ffff:192.0.2.7]:1":   "192.0.2.7",
	} {
		a, err := net.ResolveTCPAddr("tcp", in)
		check.NoError(t, err)
		if got := sourceOf(a); got != want {
			t.Errorf("sourceOf(%s) = %s, want %s", in, got, want)
		}
	}
	if got := sourceOf(nil); got != "" {
		t.Errorf("sourceOf(nil) = %q, want one shared source", got)
	}
}

// The gate reads the walk off the server: the account with the most
// subscriptions, the system account aside.
func TestLargestAccount(t *testing.T) {
	big, small := server.NewAccount("BIG"), server.NewAccount("SMALL")
	users := []*server.User{{Username: "b", Password: "b", Account: big}, {Username: "s", Password: "s", Account: small}}
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Accounts: []*server.Account{big, small}, Users: users,
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: -1, Users: users}}
	s, err := server.NewServer(opts)
	check.NoError(t, err)
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	subscribe := func(user string, n int) {
		nc, err := nats.Connect(s.ClientURL(), nats.UserInfo(user, user))
		check.NoError(t, err)
		t.Cleanup(nc.Close)
		for i := range n {
			_, err := nc.SubscribeSync(fmt.Sprintf("walk.%d", i))
			check.NoError(t, err)
		}
		check.NoError(t, nc.Flush())
	}
	// link joins a leaf server to the hub as user: its account then has a
	// leaf connection, whose connect walked it.
	link := func(user string) {
		u, err := url.Parse(fmt.Sprintf("nats-leaf://%s:%s@%s", user, user, net.JoinHostPort("127.0.0.1", fmt.Sprint(opts.LeafNode.Port))))
		check.NoError(t, err)
		l, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
			ServerName: "leaf-" + user, LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
		check.NoError(t, err)
		l.Start()
		t.Cleanup(l.Shutdown)
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			if l.NumLeafNodes() == 0 {
				return errors.New("leaf not linked")
			}
			return nil
		})
	}
	subscribe("s", 50)
	subscribe("b", 300)
	// No leaves: no walks to price.
	if got := largestAccount(s); got != 0 {
		t.Fatalf("largest account with leaves: %d subscriptions; want 0 (no leaf linked)", got)
	}
	link("s")
	if got := largestAccount(s); got < 50 || got >= 300 {
		t.Fatalf("largest account with leaves: %d subscriptions; want SMALL's 50 and some, not BIG's 300 (no leaf there)", got)
	}
	link("b")
	if got := largestAccount(s); got < 300 {
		t.Fatalf("largest account with leaves: %d subscriptions; want BIG's 300 and some", got)
	}
}
