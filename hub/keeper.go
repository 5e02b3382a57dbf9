package hub

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/throttle"
	"github.com/alpha-edge/alpha/streams"
)

// Each site has one durable consumer on every hub store it mirrors. In a
// cluster they used to inherit the stores' R3, so each site cost three
// raft groups heartbeating between the members: 0.28% of a core per idle
// site over three members, ~28 cores at 10,000 sites; and when a member
// died, a third of the fleet waited for 50-100 elections at once (put →
// applied p99 2.7-4.5 s at 150 sites). They are R1 now (MirrorConsumerConfig)
// and cost a cluster what they cost a lone hub. What R3 gave them, the
// keeper gives back: when a member dies, the consumers it held are made
// again on the living members.
//
// A new consumer must not start past what the site's mirror holds: a
// mirror that was reset expects any consumer's first delivery and takes a
// gap before it as "deleted upstream", so messages the site never got would
// be skipped. Each member therefore tells the others, every floorsEvery, the
// ack floor of each mirror consumer it holds (with AckFlowControl the floor
// is the mirror's own last stream sequence, from its flow control replies),
// and the keeper starts the new consumer just after it: the mirror skips
// what it already has. A consumer nobody knows the floor of starts at the
// beginning; for a site's keys of a bucket that is cheap, for the
// tenant's artifacts it sends the store again, once.
//
// nats-server only learns that a SIGKILLed peer is gone when its stats
// stop for 150 s (5 × its 30 s events heartbeat); until then it may place
// a new R1 consumer on the dead peer, and it does not answer deletes of
// consumers the dead peer held. A member sees the routes to a dead peer
// close at once, so the keeper tells the cluster, in the system account,
// what the peer would have said at a clean shutdown ($SYS.SERVER.<id>.SHUTDOWN).
// The peer's next route clears it when it returns.

const (
	// FloorsSubject carries each member's mirror consumers and their ack
	// floors (Floors). In the system account under operator mode.
	FloorsSubject = "alpha.hub.mirrorfloors"
	floorsEvery   = 10 * time.Second
	// floorsFirst is when a member first says its floors: a member lost
	// soon after the cluster formed should not leave its consumers to the
	// sweep's start-at-the-beginning.
	floorsFirst = time.Second
	// keeperTick is how often a member looks at its routes.
	keeperTick = 100 * time.Millisecond
	// remarkEvery is how often a lost member is marked gone again.
	remarkEvery = 2 * time.Second
	// lateIsLost is how long a member must have been lost before the
	// sweep also takes consumers that answer late for its: a mark that did
	// not hold leaves them only late.
	lateIsLost = 5 * time.Second
	// sweepEvery is how often the meta leader lists the mirror consumers
	// (it makes any the cluster cannot reach again and turns R3 ones, made
	// before, R1) while there is reason to: in a member's first minutes,
	// for sweepBusyFor after a member was lost or came back, and while
	// sweeps find work. Otherwise every sweepIdle: a list costs the meta
	// leader one consumer info request per site and store.
	sweepEvery   = 30 * time.Second
	sweepIdle    = 5 * time.Minute
	sweepBusyFor = 5 * time.Minute
	// metaEvery is how often the meta leader reads the meta group's
	// members, and routelessIsLost how long one of them must be without
	// routes before it counts as lost though this member never saw its
	// routes (it was gone before this keeper started).
	metaEvery       = time.Second
	routelessIsLost = 2 * time.Second
	// unknownID stands for a lost member's server ID in the shutdown
	// notice when this member never saw it: nats-server marks the JetStream
	// peer gone by the name in the notice; the ID only finds its other
	// state, which a member that never routed here does not have.
	unknownID = "ALPHAKEEPERUNKNOWN"
	// unnamedPeer prefixes the peer ID of a meta group member whose name
	// this member's server does not know.
	unnamedPeer = "peer:"
	// upgradesPerSweep bounds the R3 → R1 updates of one sweep (each is a
	// meta proposal and the end of a raft group).
	upgradesPerSweep = 100
	// recreateWorkers bounds the recreations running at once.
	recreateWorkers = 16
	// floorsPerMsg bounds one floors message: ~130 bytes an entry, so
	// ~130 KB, well under the 1 MiB max payload however many sites a
	// member holds.
	floorsPerMsg = 1000
)

// FloorEntry is one mirror consumer a member holds and its ack floor.
type FloorEntry struct {
	Account string    `json:"a"`
	Stream  string    `json:"s"`
	Name    string    `json:"n"`
	Floor   uint64    `json:"f"`
	Created time.Time `json:"c"` // which consumer of that name the floor is of
}

// Floors is one message a member says on FloorsSubject: a part of one
// round (all its mirror consumers, in messages of at most floorsPerMsg).
type Floors struct {
	Server    string       `json:"server"`
	Round     int64        `json:"round"` // the round's start, Unix nanoseconds
	Last      bool         `json:"last"`  // the round's last part
	Consumers []FloorEntry `json:"consumers"`
}

// keeper runs on every cluster member; only the JetStream meta leader's
// makes consumers.
type keeper struct {
	s       *server.Server
	nc      *nats.Conn // floors (and, with sys, the shutdown notices)
	sys     bool       // nc is in the system account
	tenants func() map[string]jetstream.JetStream
	log     *slog.Logger

	mu        sync.Mutex
	held      map[string]Floors    // by member name: its last whole round on FloorsSubject
	pending   map[string]Floors    // by member name: the round being received
	ids       map[string]string    // member name → server ID, from its routes ("" never seen: from the meta group)
	routeless map[string]time.Time // meta group members without routes, never seen here, since
	nextMeta  time.Time            // loop goroutine only
	led       bool                 // loop goroutine only: this member led the meta layer at the last look
	lost      map[string]time.Time // members whose routes are all gone, since
	marked    map[string]time.Time // lost members: when this one last marked them gone
	moving    map[string]bool      // lost members whose consumers this member made again
	change    time.Time            // when this member started, or last saw a member go or come back
}

// heard takes one part of a member's round; the round replaces what the
// member said before once its last part is in (a round missing a part is
// dropped when the next one starts).
func (k *keeper) heard(f Floors) {
	k.mu.Lock()
	defer k.mu.Unlock()
	p, ok := k.pending[f.Server]
	if !ok || p.Round != f.Round {
		p = Floors{Server: f.Server, Round: f.Round}
	}
	p.Consumers = append(p.Consumers, f.Consumers...)
	if f.Last {
		p.Last = true
		k.held[f.Server] = p
		delete(k.pending, f.Server)
		return
	}
	k.pending[f.Server] = p
}

// stillLost says whether member is still without routes and this member
// still leads the JetStream meta layer: a move stops as soon as either ends.
func (k *keeper) stillLost(member string) bool {
	k.mu.Lock()
	_, lost := k.lost[member]
	k.mu.Unlock()
	return lost && k.s.JetStreamIsLeader()
}

// anyLost says whether some member is without routes now, and whether one
// has been for lateIsLost.
func (k *keeper) anyLost() (now, long bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, since := range k.lost {
		now = true
		if time.Since(since) >= lateIsLost {
			long = true
		}
	}
	return now, long
}

func (k *keeper) lastChange() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.change
}

func (k *keeper) start(ctx context.Context) error {
	k.held, k.pending, k.ids, k.lost, k.moving = map[string]Floors{}, map[string]Floors{}, map[string]string{}, map[string]time.Time{}, map[string]bool{}
	k.marked, k.routeless = map[string]time.Time{}, map[string]time.Time{}
	k.change = time.Now()
	sub, err := k.nc.Subscribe(FloorsSubject, func(m *nats.Msg) {
		var f Floors
		if json.Unmarshal(m.Data, &f) != nil || f.Server == "" || f.Server == k.s.Name() {
			return
		}
		k.heard(f)
	})
	if err != nil {
		return fmt.Errorf("hub: keeper: subscribe %s: %w", FloorsSubject, err)
	}
	go func() {
		defer sub.Unsubscribe()
		k.loop(ctx)
	}()
	return nil
}

func (k *keeper) loop(ctx context.Context) {
	tick := time.NewTicker(keeperTick)
	defer tick.Stop()
	nextFloors := time.Now().Add(floorsFirst)
	nextSweep := time.Now().Add(throttle.Jitter(sweepEvery, 20))
	// A sweep runs beside the loop: listing a large fleet's consumers
	// takes seconds, and a member lost meanwhile must be seen at once.
	swept := make(chan bool, 1)
	sweeping := false
	for {
		select {
		case <-ctx.Done():
			return
		case worked := <-swept:
			sweeping = false
			every := sweepIdle
			if worked || time.Since(k.lastChange()) < sweepBusyFor {
				every = sweepEvery
			}
			nextSweep = time.Now().Add(throttle.Jitter(every, 20))
			continue
		case <-tick.C:
		}
		k.checkRoutes(ctx)
		if time.Now().After(nextFloors) {
			nextFloors = time.Now().Add(throttle.Jitter(floorsEvery, 20))
			k.publishFloors()
		}
		if !sweeping && time.Now().After(nextSweep) {
			sweeping = true
			go func() {
				worked := false
				if k.s.JetStreamIsLeader() {
					worked = k.sweep(ctx, nil)
				}
				swept <- worked
			}()
		}
	}
}

// checkRoutes notes which members lost all their routes, tells the cluster
// (once per loss) and, on the meta leader, makes their consumers again.
func (k *keeper) checkRoutes(ctx context.Context) {
	rz, err := k.s.Routez(&server.RoutezOptions{})
	if err != nil {
		return
	}
	var meta map[string]bool
	leads := k.s.JetStreamIsLeader()
	if leads && (!k.led || time.Now().After(k.nextMeta)) {
		// At once on becoming the leader: a member that died with the
		// last leader is this one's to move.
		k.nextMeta = time.Now().Add(metaEvery)
		meta = k.metaMembers()
	}
	k.led = leads
	up := map[string]bool{}
	k.mu.Lock()
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			up[r.RemoteName] = true
			k.ids[r.RemoteName] = r.RemoteID
		}
	}
	// A member that died before this keeper first looked has no routes
	// to lose, but the meta group still lists it (a member restarted just
	// before another died, or a cluster restarted without one member:
	// nobody moved the dead one's consumers). It is lost at once if the
	// server already takes it for offline (another keeper said it is
	// gone), else after routelessIsLost without routes, as a live member
	// whose routes are still forming would be. One this server never
	// heard of is listed by peer ID (unnamedPeer) until it is named or
	// leaves the group.
	for name, offline := range meta {
		if _, seen := k.ids[name]; seen || up[name] {
			delete(k.routeless, name)
			continue
		}
		since, ok := k.routeless[name]
		if !ok {
			since = time.Now()
			k.routeless[name] = since
		}
		if offline || time.Since(since) >= routelessIsLost {
			k.ids[name] = ""
			delete(k.routeless, name)
		}
	}
	if meta != nil {
		for name := range k.ids {
			if _, listed := meta[name]; strings.HasPrefix(name, unnamedPeer) && !listed {
				delete(k.ids, name)
				if _, ok := k.lost[name]; ok {
					k.change = time.Now()
				}
				delete(k.lost, name)
				delete(k.moving, name)
				delete(k.marked, name)
			}
		}
	}
	var gone []string
	for name, id := range k.ids {
		if up[name] {
			if _, ok := k.lost[name]; ok {
				k.change = time.Now()
			}
			delete(k.lost, name)
			delete(k.moving, name)
			delete(k.marked, name)
			continue
		}
		if _, ok := k.lost[name]; !ok {
			k.lost[name] = time.Now()
			k.change = time.Now()
			gone = append(gone, name)
		}
		// Marked again while it stays lost: stats the member sent before
		// it died, processed after the mark, unmark it (nats-server takes
		// any stats for a sign of life).
		if time.Since(k.marked[name]) >= remarkEvery {
			k.marked[name] = time.Now()
			k.markOffline(name, id)
		}
	}
	var move []string
	if k.s.JetStreamIsLeader() {
		for name := range k.lost {
			if !k.moving[name] {
				k.moving[name] = true
				move = append(move, name)
			}
		}
	}
	k.mu.Unlock()
	for _, name := range gone {
		k.log.Warn("cluster member lost; its sites' mirror consumers move to the others", "member", name)
	}
	for _, name := range move {
		go k.move(ctx, name)
	}
}

// markOffline says for a member what it would have said at a clean
// shutdown. Only the system account can; in open mode the keeper goes
// without (a new consumer may land on the dead member and is made again).
// Lock held.
func (k *keeper) markOffline(name, id string) {
	if !k.sys || strings.HasPrefix(name, unnamedPeer) {
		// Unnamed, it is unknown to this member's server too, which
		// takes it for offline already.
		return
	}
	id = cmp.Or(id, unknownID)
	b, _ := json.Marshal(server.ServerInfo{Name: name, ID: id})
	if err := k.nc.Publish(fmt.Sprintf("$SYS.SERVER.%s.SHUTDOWN", id), b); err != nil {
		k.log.Debug("keeper: telling the cluster a member is gone failed", "member", name, "err", err)
	}
}

// metaMembers is the other members of the JetStream meta group, each with
// whether this server takes it for offline; nil if it could not be read.
// Only the meta leader (which moves consumers) asks. A member this server
// never heard from (it was down since before this one started) has no
// name here: it is unnamedPeer and its peer ID.
func (k *keeper) metaMembers() map[string]bool {
	jsz, err := k.s.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return nil
	}
	members := map[string]bool{}
	for _, p := range jsz.Meta.Replicas {
		switch {
		case p == nil || p.Name == k.s.Name():
		case p.Name != "" && !strings.ContainsAny(p.Name, " \t"):
			members[p.Name] = p.Offline
		case p.Peer != "":
			// nats-server names it with a sentence ("Server name
			// unknown at this time"); unknown, it is not offline to
			// the server, which just never heard of it.
			members[unnamedPeer+p.Peer] = false
		}
	}
	return members
}

// publishFloors tells the other members which mirror consumers this one
// holds and their ack floors.
func (k *keeper) publishFloors() {
	var all []FloorEntry
	// Only the accounts this hub serves, one at a time: a walk of every
	// account stops at Jsz's first 1,024.
	for acc := range k.tenants() {
		jsz, err := k.s.Jsz(&server.JSzOptions{Account: acc, Streams: true, Consumer: true})
		if err != nil || len(jsz.AccountDetails) == 0 {
			continue
		}
		ad := jsz.AccountDetails[0]
		// Id is the account's name (its key under operator mode); Name
		// may be its tag.
		for _, sd := range ad.Streams {
			if _, ok := mirroredStore(sd.Name); !ok {
				continue
			}
			for _, ci := range sd.Consumer {
				if ci == nil || !strings.HasPrefix(ci.Name, streams.MirrorConsumer("")) {
					continue
				}
				if ci.Cluster != nil && ci.Cluster.Leader != k.s.Name() {
					continue
				}
				all = append(all, FloorEntry{Account: ad.Id, Stream: sd.Name, Name: ci.Name, Floor: ci.AckFloor.Stream, Created: ci.Created})
			}
		}
	}
	round := time.Now().UnixNano()
	for i := 0; i == 0 || i < len(all); i += floorsPerMsg {
		part := all[i:min(i+floorsPerMsg, len(all))]
		b, _ := json.Marshal(Floors{Server: k.s.Name(), Round: round, Last: i+floorsPerMsg >= len(all), Consumers: part})
		if err := k.nc.Publish(FloorsSubject, b); err != nil {
			// Without floors a lost member's consumers start at the
			// beginning: the artifacts store sent again to its sites.
			k.log.Warn("keeper: telling the other members this one's mirror consumers failed", "err", err)
			return
		}
	}
}

// move makes again, on the living members, the mirror consumers a lost
// member held (from its last floors), then sweeps for any it did not know.
func (k *keeper) move(ctx context.Context, member string) {
	k.mu.Lock()
	held := k.held[member]
	k.mu.Unlock()
	start := time.Now()
	tenants := k.tenants()
	work := make(chan FloorEntry)
	var wg sync.WaitGroup
	var mu sync.Mutex
	made, failed := 0, 0
	for range recreateWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				// The member came back, or this one no longer leads:
				// its consumers stay where they are (or the new
				// leader moves them).
				if !k.stillLost(member) {
					continue
				}
				err := recreateMirrorConsumer(ctx, tenants[e.Account], e.Stream, e.Name, e.Floor)
				mu.Lock()
				if err != nil {
					failed++
					k.log.Warn("keeper: mirror consumer not made again", "consumer", e.Name, "stream", e.Stream, "err", err)
				} else {
					made++
				}
				mu.Unlock()
			}
		}()
	}
	for _, e := range held.Consumers {
		if tenants[e.Account] == nil {
			continue
		}
		select {
		case work <- e:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	k.log.Info("keeper: lost member's mirror consumers made again", "member", member, "made", made, "failed", failed, "took", time.Since(start).Round(time.Millisecond))
	// Its floors are of consumers that no longer exist: a later sweep
	// must not start a consumer of the same name from them.
	k.mu.Lock()
	if k.held[member].Round == held.Round {
		delete(k.held, member)
	}
	k.mu.Unlock()
	// Sweeps follow while the member stays lost: the first may come too
	// early (a meta leader just elected may not answer lists yet, the mark
	// may not have held), and late consumers count as lost after lateIsLost.
	for _, wait := range []time.Duration{0, 2 * time.Second, 4 * time.Second, 8 * time.Second} {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if !k.stillLost(member) {
			return
		}
		k.sweep(ctx, held.Consumers)
	}
}

// sweep lists every tenant's mirror consumers: while a member is lost,
// those the cluster reports offline (all their members gone) are made
// again (known: entries just made, not to be made twice); one that only
// answered late is left for the next sweep. R3 ones made before the keeper
// become R1. It says whether it found any such consumer.
func (k *keeper) sweep(ctx context.Context, known []FloorEntry) bool {
	done := map[string]bool{}
	for _, e := range known {
		done[e.Account+"/"+e.Stream+"/"+e.Name] = true
	}
	floors := k.floors()
	upgrades, remade := 0, 0
	for acc, js := range k.tenants() {
		for _, st := range streams.Mirrored() {
			cis, offline, late, err := listConsumers(ctx, js.Conn(), st.Stream())
			if err != nil {
				k.log.Warn("keeper: listing mirror consumers failed", "stream", st.Stream(), "err", err)
				continue
			}
			// A member marked gone that came back is marked alive at its
			// next stats (up to 10 s later): until then its consumers are
			// reported offline too, and are where they should be.
			lost, long := k.anyLost()
			created := map[string]time.Time{}
			for _, ci := range cis {
				created[ci.Name] = ci.Created
			}
			lostOnes := offline
			if !k.sys || long {
				// Open mode: nothing told the cluster the member is gone,
				// so its consumers are only late to answer.
				lostOnes = append(slices.Clone(offline), late...)
			}
			for _, name := range lostOnes {
				key := acc + "/" + st.Stream() + "/" + name
				if !lost || done[key] || !strings.HasPrefix(name, streams.MirrorConsumer("")) {
					continue
				}
				remade++
				// A floor counts only if it is of this very consumer: one
				// of an earlier consumer of the name (the site was added
				// again) may be past what the site now holds.
				var floor uint64
				if f, ok := floors[key]; ok && f.Created.Equal(created[name]) {
					floor = f.Floor
				}
				if err := recreateMirrorConsumer(ctx, js, st.Stream(), name, floor); err != nil {
					k.log.Warn("keeper: unreachable mirror consumer not made again", "consumer", name, "err", err)
				} else {
					k.log.Info("keeper: unreachable mirror consumer made again", "consumer", name)
				}
			}
			gone := map[string]bool{}
			for _, name := range offline {
				gone[name] = true
			}
			for _, ci := range cis {
				if upgrades >= upgradesPerSweep || gone[ci.Name] || !strings.HasPrefix(ci.Name, streams.MirrorConsumer("")) || ci.Config.Replicas == 1 {
					continue
				}
				cfg := ci.Config
				cfg.Replicas = 1
				uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := js.UpdateConsumer(uctx, st.Stream(), cfg)
				cancel()
				upgrades++
				if err != nil {
					k.log.Warn("keeper: mirror consumer not made R1", "consumer", ci.Name, "err", err)
				}
			}
		}
	}
	if upgrades > 0 {
		k.log.Info("keeper: mirror consumers made before R1 turned R1", "consumers", upgrades)
	}
	return upgrades+remade > 0
}

// floors is every member's last word, by account/stream/consumer; where
// two members spoke of one consumer, the lower floor (a floor too low only
// sends the site what it has again).
func (k *keeper) floors() map[string]FloorEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]FloorEntry{}
	for _, f := range k.held {
		for _, e := range f.Consumers {
			key := e.Account + "/" + e.Stream + "/" + e.Name
			if o, ok := out[key]; !ok || e.Floor < o.Floor {
				out[key] = e
			}
		}
	}
	return out
}

// mirroredStore is the store behind a hub stream that sites mirror.
func mirroredStore(stream string) (streams.Store, bool) {
	for _, st := range streams.Mirrored() {
		if st.Stream() == stream {
			return st, true
		}
	}
	return streams.Store{}, false
}

// mirrorConsumerSite is the site a mirror consumer of the store serves.
func mirrorConsumerSite(st streams.Store, name string) (string, bool) {
	site, ok := strings.CutPrefix(name, streams.MirrorConsumer(""))
	if !ok {
		return "", false
	}
	site, ok = strings.CutSuffix(site, "-"+st.Bucket)
	if !ok || site == "" || streams.MirrorConsumerConfig(site, st).Durable != name {
		return "", false
	}
	return site, true
}

// recreateMirrorConsumer deletes a mirror consumer the cluster lost and
// makes it again, starting just after floor (0: at the beginning). It is
// done when the new consumer answers: a create that lands on a member
// that is gone gets no answer and is tried again.
func recreateMirrorConsumer(ctx context.Context, js jetstream.JetStream, stream, name string, floor uint64) error {
	if js == nil {
		return errors.New("no connection to the consumer's account")
	}
	st, ok := mirroredStore(stream)
	if !ok {
		return fmt.Errorf("stream %s is not a mirrored store", stream)
	}
	site, ok := mirrorConsumerSite(st, name)
	if !ok {
		return fmt.Errorf("consumer %s is not a site's mirror consumer on %s", name, stream)
	}
	cfg := streams.MirrorConsumerConfig(site, st)
	if floor > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = floor + 1
	}
	var err error
	for attempt := range 6 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		// A delete of a consumer whose only member is gone is answered
		// once the cluster knows it is gone; the proposal is made either way.
		derr := js.DeleteConsumer(dctx, stream, name)
		cancel()
		if derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) && !errors.Is(derr, context.DeadlineExceeded) {
			err = fmt.Errorf("delete: %w", derr)
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = js.CreateConsumer(cctx, stream, cfg)
		cancel()
		if err == nil {
			return nil
		}
		err = fmt.Errorf("create: %w", err)
	}
	return err
}

// consumerList is the JetStream API's answer to CONSUMER.LIST.
type consumerList struct {
	Total     int                       `json:"total"`
	Offset    int                       `json:"offset"`
	Limit     int                       `json:"limit"`
	Consumers []*jetstream.ConsumerInfo `json:"consumers"`
	Missing   []string                  `json:"missing,omitempty"`
	Offline   map[string]string         `json:"offline,omitempty"`
	Error     *struct {
		Code        int    `json:"code"`
		Description string `json:"description"`
	} `json:"error,omitempty"`
}

// listConsumers lists a stream's consumers, the names of those the
// cluster reports offline (all their members gone; nats.go's lister drops
// them), and of those that did not answer in time (late).
func listConsumers(ctx context.Context, nc *nats.Conn, stream string) (all []*jetstream.ConsumerInfo, offline, late []string, err error) {
	for offset := 0; ; {
		req, _ := json.Marshal(map[string]int{"offset": offset})
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var m *nats.Msg
		m, err = nc.RequestWithContext(rctx, "$JS.API.CONSUMER.LIST."+stream, req)
		cancel()
		if err != nil {
			return all, offline, late, err
		}
		var l consumerList
		if err := json.Unmarshal(m.Data, &l); err != nil {
			return all, offline, late, err
		}
		if l.Error != nil {
			return all, offline, late, fmt.Errorf("%s (%d)", l.Error.Description, l.Error.Code)
		}
		for _, ci := range l.Consumers {
			// nats-server makes up the info of a consumer whose members
			// are all offline from its assignment: the name is only in
			// its config. Taken for a late one, it waited for lateIsLost.
			if ci.Name == "" {
				ci.Name = cmp.Or(ci.Config.Name, ci.Config.Durable)
			}
		}
		all = append(all, l.Consumers...)
		// The page covers each of its consumers once, but one whose
		// members are all offline is both listed (by hand, offline) and
		// named missing; one that did not answer in time is only missing.
		page := map[string]bool{}
		listed := map[string]bool{}
		for _, ci := range l.Consumers {
			page[ci.Name], listed[ci.Name] = true, true
		}
		for _, name := range l.Missing {
			if listed[name] {
				offline = append(offline, name)
			} else {
				late = append(late, name)
			}
			page[name] = true
		}
		for name := range l.Offline {
			offline = append(offline, name)
			page[name] = true
		}
		offset += len(page)
		if len(page) == 0 || offset >= l.Total {
			slices.Sort(offline)
			return all, slices.Compact(offline), late, nil
		}
	}
}
