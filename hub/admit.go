package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"net"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/time/rate"
)

// DefaultLeafConnectRate is the most site uplinks a hub admits to their
// TLS handshake per second (in bursts of as many) unless Config says
// otherwise; fewer when each connect costs more (walkBudget).
const DefaultLeafConnectRate = 50

// walkBudget is how many subscriptions a second, per core, the hub spends
// on admitting uplinks.
//
// Each leafnode connect costs the hub a walk of every subscription of the
// tenant account (nats-server's initLeafNodeSmapAndSendSubs: 17 per site at
// 1,000 sites, 4 for each of its three mirror consumers and the rest its
// own interest) with a permission check of each, about 1 µs apiece in CPU
// profiles of a 1,000-site reconnect (14-25 ms a connect). The walk holds
// the new connection's lock, and the leaf must hear back within
// nats-server's fixed 2 s of its CONNECT or it drops the link as stale
// ("Stale Connection - Remote: hub") and starts over. Admitted at a fixed 50 a second, a 1,000-site
// fleet needed more than the hub had, every connect queued past those
// 2 s, ~50 a second were dropped as stale as fast as they were admitted,
// and the fleet never settled; at a fixed 25 the first ~350 linked and
// then the same. So the rate follows the cost: a connect that walks twice
// as much is admitted half as often. With 150,000 (18-23 a second at
// 1,000 sites on 2 cores) the 1,000 sites were all back in 57 s; with twice
// that, the load control below had to cut in, stale drops came in bursts
// and 777 were back after 80 s.
const walkBudget = 150_000

// admitWait is how long a handshake waits for its turn before it is
// refused: well inside the leaf's and the hub's 10 s TLS deadlines.
const admitWait = 4 * time.Second

// Bounds of what the gate holds: handshakes queued for a turn (each a
// socket, a goroutine and nats-server's client), of them from one source,
// and handshakes held before a refusal. Whoever floods the port cannot
// make the hub hold one of each per attempt, nor one source fill the
// queue. A 1,000-site storm through one address (this machine's harness,
// sites behind one NAT or proxy) keeps the queue full with 256.
const (
	maxQueued    = 1024
	maxPerSource = 256
	maxHeld      = 1024
)

var errHubBusy = errors.New("hub: too many site uplinks connecting; retry")

// gate admits uplinks to the leafnode listener's TLS handshake at the rate
// the hub can finish their connects, taking sources in turn: a source
// with many handshakes waiting (a flood from one host) gets a turn as
// often as a site with one, not a turn per handshake, so it cannot keep
// sites from their turns while the queue holds them.
type gate struct {
	max float64 // configured ceiling, per second
	lim *rate.Limiter

	mu        sync.Mutex
	queues    map[string][]*waiter // by source, oldest first
	ring      []string             // sources with waiters, in turn order
	next      int                  // ring index of the next turn
	queued    int
	held      int
	perSource int
	wake      chan struct{} // a waiter arrived
}

type waiter struct {
	src      string
	turn     chan struct{} // closed when admitted
	admitted bool
}

// newGate starts a gate's turns; they stop when ctx ends.
func newGate(ctx context.Context, perSecond int) *gate {
	g := &gate{max: float64(perSecond), lim: rate.NewLimiter(rate.Limit(perSecond), perSecond),
		queues: map[string][]*waiter{}, perSource: maxPerSource, wake: make(chan struct{}, 1)}
	go g.turns(ctx)
	return g
}

// install makes tc's handshakes pass the gate before any key exchange.
func (g *gate) install(tc *tls.Config) {
	prev := tc.GetConfigForClient
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		src := ""
		if hello.Conn != nil {
			src = sourceOf(hello.Conn.RemoteAddr())
		}
		if err := g.admit(hello.Context(), src); err != nil {
			return nil, err
		}
		if prev != nil {
			return prev(hello)
		}
		return nil, nil
	}
}

// sourceOf is who a handshake comes from: its IPv4 address, or its IPv6
// /64 (one host may hold all of a /64).
func sourceOf(a net.Addr) string {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		if a == nil {
			return ""
		}
		return a.String()
	}
	if ip4 := ta.IP.To4(); ip4 != nil {
		return ip4.String()
	}
	return ta.IP.Mask(net.CIDRMask(64, 128)).String()
}

// admit waits for src's turn. A handshake with no room in the queue is
// refused, but only after admitWait: refused at once, each leaf comes back
// in half a second (its reconnect interval) and a fleet of 1,000 retried
// ~2,000 ClientHellos a second, each a fresh key share for it and an
// accept, a client and a parse for the hub.
func (g *gate) admit(ctx context.Context, src string) error {
	g.mu.Lock()
	if len(g.queues[src]) >= g.perSource || g.queued >= maxQueued {
		if g.held >= maxHeld {
			g.mu.Unlock()
			return errHubBusy
		}
		g.held++
		g.mu.Unlock()
		sleep(ctx, admitWait)
		g.mu.Lock()
		g.held--
		g.mu.Unlock()
		return errHubBusy
	}
	w := &waiter{src: src, turn: make(chan struct{})}
	if len(g.queues[src]) == 0 {
		g.ring = append(g.ring, src)
	}
	g.queues[src] = append(g.queues[src], w)
	g.queued++
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}

	t := time.NewTimer(admitWait)
	defer t.Stop()
	select {
	case <-w.turn:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.admitted { // its turn came as it gave up: take it
		return nil
	}
	g.drop(w)
	return errHubBusy
}

// turns admits one waiter per token of the rate, the sources in turn.
func (g *gate) turns(ctx context.Context) {
	for {
		g.mu.Lock()
		n := g.queued
		g.mu.Unlock()
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-g.wake:
			}
			continue
		}
		if err := g.lim.Wait(ctx); err != nil {
			return
		}
		g.mu.Lock()
		if len(g.ring) > 0 {
			g.next %= len(g.ring)
			w := g.queues[g.ring[g.next]][0]
			w.admitted = true
			close(w.turn)
			g.drop(w) // advances g.next past w's source, or removes it
		}
		g.mu.Unlock()
	}
}

// drop takes w out of its queue; an admitted waiter's source has had its
// turn. g.mu is held.
func (g *gate) drop(w *waiter) {
	q := g.queues[w.src]
	for i, o := range q {
		if o == w {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	g.queued--
	at := slices.Index(g.ring, w.src)
	if len(q) > 0 {
		g.queues[w.src] = q
		if w.admitted && at == g.next {
			g.next++
		}
		return
	}
	delete(g.queues, w.src)
	g.ring = slices.Delete(g.ring, at, at+1)
	if at < g.next {
		g.next--
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// setWalk sets the rate for connects that walk subs subscriptions each,
// on cores cores, scaled by load (0-1, see follow).
func (g *gate) setWalk(subs, cores int, load float64) {
	r := g.max
	if subs > 0 {
		r = min(r, walkBudget*float64(max(cores, 1))/float64(subs))
	}
	r = max(r*load, 1)
	g.lim.SetLimit(rate.Limit(r))
	g.lim.SetBurst(int(math.Ceil(r)))
}

// Load control. What a connect costs is known (walkBudget); what the hub
// has to spare is not: the hub's other work grows with every site that
// is back (its mirrors catch up, its uplinks send what piled up) and the
// machine may be shared. A hub short of CPU wakes late, so follow ticks
// every lagTick and halves the rate after a second in which a tick came
// lagLimit late, and gives back a tenth a second after one without.
// It is the safety net for a hub the budget overrates (slower cores, a
// shared machine): at a fixed 25 a second, 1,000 sites on this 2-core
// machine never settled (connects dropped as stale at 15-30 a second);
// with the budget doubled and this control, 777 were back after 80 s.
const (
	lagTick  = 100 * time.Millisecond
	lagLimit = 100 * time.Millisecond
	minLoad  = 1.0 / 16
)

// nextLoad is the load factor after a second whose latest tick was lag late.
func nextLoad(load float64, lag time.Duration) float64 {
	if lag > lagLimit {
		return max(load/2, minLoad)
	}
	return min(load+0.1, 1)
}

// follow keeps the rate in step with the largest account's subscriptions
// (a leaf's tenant is not known before its handshake) and with the
// hub's load until ctx ends.
func (g *gate) follow(ctx context.Context, s *server.Server, log *slog.Logger) {
	t := time.NewTicker(lagTick)
	defer t.Stop()
	load, last, lag := 1.0, time.Now(), time.Duration(0)
	g.setWalk(largestAccount(s), runtime.GOMAXPROCS(0), load)
	for tick := 1; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		lag = max(lag, now.Sub(last)-lagTick)
		last = now
		if tick%int(time.Second/lagTick) != 0 {
			continue
		}
		prev := load
		load = nextLoad(load, lag)
		subs := largestAccount(s)
		g.setWalk(subs, runtime.GOMAXPROCS(0), load)
		switch {
		case load < prev && prev == 1:
			log.Warn("hub busy; admitting fewer site uplinks", "per_second", float64(g.lim.Limit()), "late", lag.Round(time.Millisecond), "subscriptions", subs)
		case load < prev:
			log.Debug("hub still busy", "per_second", float64(g.lim.Limit()), "late", lag.Round(time.Millisecond))
		case load == 1 && prev < 1:
			log.Info("hub keeps up again; admitting site uplinks at the full rate", "per_second", float64(g.lim.Limit()))
		}
		lag = 0
	}
}

// largestAccount is the most subscriptions any account that leaves bind
// to holds (a leaf's connect walks its account's): a site's own account
// (accounts.SiteAccount) holds a few, a tenant's that sites issued before
// site accounts still bind to holds every site's consumers. Accounts
// without leaves are not walked.
func largestAccount(s *server.Server) int {
	az, err := s.Accountz(&server.AccountzOptions{})
	if err != nil {
		return 0
	}
	sys := s.SystemAccount()
	most := 0
	for _, name := range az.Accounts {
		if sys != nil && name == sys.Name {
			continue
		}
		if a, err := s.LookupAccount(name); err == nil && a.NumLeafNodes() > 0 {
			most = max(most, a.TotalSubs())
		}
	}
	return most
}
