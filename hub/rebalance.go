package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/internal/throttle"
)

// A cluster member's sites move to the survivors when it dies (each leaf
// takes the next URL of its list), but nothing moves them back when it
// rejoins: after a rolling restart the member restarted last held ~0
// sites and its peers all the rest. The rebalancer drops a few links of a
// member that holds clearly more than its share; those sites reconnect to
// the next member in their list, and over a few rounds the load evens out.

const (
	// DefaultRebalanceEvery is how often a member compares its links with
	// its peers' (jittered ±20%).
	DefaultRebalanceEvery = 30 * time.Second
	// rebalanceSettle is how long after its start a member never moves
	// links: the cluster may still be forming and sites still arriving.
	rebalanceSettle = time.Minute
	// rebalancePace is the least time between two links dropped, so the
	// sites moved do not reconnect as a burst.
	rebalancePace = 200 * time.Millisecond
	// leafCountSubject is answered by every member's rebalancer with its
	// name and how many leafnode links it holds (leafCount). Under
	// operator mode it lives in the system account (Config.SystemOptions),
	// which no tenant's user reaches.
	leafCountSubject = "alpha.hub.leafcount"
)

// leafCount is one member's answer on leafCountSubject.
type leafCount struct {
	Server string `json:"server"`
	Leafs  int    `json:"leafs"`
}

// linkCounts is what a member sees at one check.
type linkCounts struct {
	Own     int            // this member's links
	Peers   map[string]int // the other members' links, by server name
	Members int            // how many members the cluster has
	Uptime  time.Duration  // since this member started
}

// linksToMove says how many links a member holding counts.Own should drop:
// none unless every member answered, the member is past its first minute
// and it holds more than its fair share (the total over the members,
// rounded up) by a margin of max(2, 10% of the share); then at most half
// of its excess over the share, at least one. Pure: no I/O.
func linksToMove(c linkCounts) int {
	if c.Members < 2 || len(c.Peers) < c.Members-1 || c.Uptime < rebalanceSettle {
		return 0
	}
	total := c.Own
	for _, n := range c.Peers {
		total += n
	}
	share := (total + c.Members - 1) / c.Members
	margin := max(2, (share+9)/10)
	if c.Own <= share+margin {
		return 0
	}
	return max(1, (c.Own-share)/2)
}

// rebalancer runs linksToMove every interval on a cluster member.
type rebalancer struct {
	s       *server.Server
	nc      *nats.Conn
	members int
	every   time.Duration
	started time.Time
	log     *slog.Logger
}

// startRebalancer answers the peers' counts on nc and checks this
// member's share until ctx ends.
func startRebalancer(ctx context.Context, r *rebalancer) error {
	sub, err := r.nc.Subscribe(leafCountSubject, func(m *nats.Msg) {
		b, _ := json.Marshal(leafCount{Server: r.s.Name(), Leafs: r.s.NumLeafNodes()})
		m.Respond(b)
	})
	if err != nil {
		return fmt.Errorf("hub: rebalancer: subscribe %s: %w", leafCountSubject, err)
	}
	go func() {
		defer sub.Unsubscribe()
		r.loop(ctx)
	}()
	return nil
}

func (r *rebalancer) loop(ctx context.Context) {
	over := false // the previous check also saw this member over its share
	slow := 1     // backoff factor after moves that did not stick
	var after *move
	for {
		// ±20% so members that started together do not check in step.
		wait := throttle.Jitter(r.every*time.Duration(slow), 20)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		c, err := r.counts(ctx)
		if err != nil {
			r.log.Debug("rebalance: counting the members' links failed", "err", err)
			over = false
			continue
		}
		if after != nil {
			slow = nextSlow(slow, *after, c.Own)
			after = nil
		}
		n := linksToMove(c)
		if n == 0 || !over {
			over = n > 0
			continue
		}
		moved := r.drop(ctx, n)
		r.log.Info("rebalance: moved site links to other members", "moved", moved, "own", c.Own, "peers", c.Peers, "members", c.Members)
		after = &move{own: c.Own, moved: moved}
		// The moved sites reconnect and the counts change: start over
		// with two fresh checks.
		over = false
	}
}

// move is what a member held and dropped at one rebalance.
type move struct{ own, moved int }

// maxSlow bounds the backoff: checks at most every 32 intervals (16 min
// with the default).
const maxSlow = 32

// nextSlow is the backoff factor after a move, seen from the member's
// links at the next check. Sites that can only reach this member (their
// uplink lists it alone) come straight back when dropped; a member that
// kept dropping them would bounce their links every minute for nothing.
// A move that did not stick (the member lost less than half of what it
// dropped) doubles the time between checks; one that did resets it.
func nextSlow(slow int, m move, own int) int {
	if m.moved == 0 || m.own-own < (m.moved+1)/2 {
		return min(2*slow, maxSlow)
	}
	return 1
}

// counts asks every member how many links it holds and waits until all
// answered or 2 s passed; a peer that did not answer is missing from Peers.
func (r *rebalancer) counts(ctx context.Context) (linkCounts, error) {
	c := linkCounts{Members: r.members, Uptime: time.Since(r.started), Peers: map[string]int{}}
	inbox := r.nc.NewRespInbox()
	sub, err := r.nc.SubscribeSync(inbox)
	if err != nil {
		return c, err
	}
	defer sub.Unsubscribe()
	if err := r.nc.PublishRequest(leafCountSubject, inbox, nil); err != nil {
		return c, err
	}
	c.Own = r.s.NumLeafNodes()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	for len(c.Peers) < r.members-1 {
		m, err := sub.NextMsgWithContext(wctx)
		if err != nil {
			break // a peer that did not answer keeps linksToMove at 0
		}
		var lc leafCount
		if json.Unmarshal(m.Data, &lc) != nil || lc.Server == "" || lc.Server == r.s.Name() {
			continue
		}
		c.Peers[lc.Server] = lc.Leafs
	}
	c.Own = max(c.Own, r.s.NumLeafNodes()) // never undercount this member
	return c, nil
}

// drop closes up to n leafnode links chosen at random, one per
// rebalancePace, and returns how many it closed.
func (r *rebalancer) drop(ctx context.Context, n int) int {
	lz, err := r.s.Leafz(&server.LeafzOptions{})
	if err != nil {
		r.log.Warn("rebalance: listing leafnode links failed", "err", err)
		return 0
	}
	ids := make([]uint64, 0, len(lz.Leafs))
	for _, l := range lz.Leafs {
		ids = append(ids, l.ID)
	}
	rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	moved := 0
	for _, id := range ids[:min(n, len(ids))] {
		if moved > 0 {
			select {
			case <-ctx.Done():
				return moved
			case <-time.After(rebalancePace):
			}
		}
		if err := r.s.DisconnectClientByID(id); err != nil {
			continue // it left on its own meanwhile
		}
		moved++
	}
	return moved
}

// startRebalance runs, when the hub is a cluster member (it has routes to
// its peers, each of which lists every other member), the mirror consumer
// keeper (keeper.go) and, unless NoRebalance is set, the rebalancer.
func (h *Hub) startRebalance() error {
	if h.opts.Cluster.Port == 0 || len(h.opts.Routes) == 0 {
		return nil
	}
	// The counts travel in the system account under operator mode: in a
	// tenant's account its admin could hear the members' requests and
	// answer first with forged counts, and so make a member drop every
	// tenant's site links. So do the keeper's floors: forged, they would
	// start a site's new mirror consumer past what the site holds.
	var nc *nats.Conn
	own := len(h.cfg.SystemOptions) > 0
	if own {
		var err error
		nc, err = nats.Connect("", append([]nats.Option{nats.InProcessServer(h.Server), nats.Name("alpha-hub-cluster"),
			nats.Timeout(20 * time.Second), nats.MaxReconnects(-1)}, h.cfg.SystemOptions...)...)
		if err != nil {
			return fmt.Errorf("hub: cluster coordination: system account connection: %w", err)
		}
	} else {
		h.mu.Lock()
		nc = h.tenants[0].nc
		h.mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	stop := func() {
		cancel()
		if own {
			nc.Close()
		}
	}
	log := h.cfg.Log.With("role", "hub")
	k := &keeper{s: h.Server, nc: nc, sys: own, tenants: h.tenantStreams, log: log}
	if err := k.start(ctx); err != nil {
		stop()
		return err
	}
	if !h.cfg.NoRebalance {
		r := &rebalancer{s: h.Server, nc: nc, members: len(h.opts.Routes) + 1,
			every: cmp.Or(h.cfg.RebalanceEvery, DefaultRebalanceEvery), started: time.Now(), log: log}
		if err := startRebalancer(ctx, r); err != nil {
			stop()
			return err
		}
	}
	h.stopRebalance = stop
	return nil
}
