package rollout

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// Config builds a Controller.
type Config struct {
	JS  jetstream.JetStream // the tenant's JetStream at the hub
	Log *slog.Logger
	// Reachable, if set, says whether a site's leaf is linked to the hub
	// now; a node of an unlinked site is pending at once rather than when
	// its status goes stale.
	Reachable func(site string) bool
	// Stale is how old a node's status may be before the node counts as
	// unreachable (default 3 status heartbeats).
	Stale time.Duration
	// LinkGrace is how long a site must stay unlinked before its nodes
	// count as pending (default 15 s): after a hub restart every site is
	// unlinked for the moment it takes to reconnect, and a gate must not
	// pass on that.
	LinkGrace time.Duration
	// Tick is how often running rollouts advance (default 500 ms); status
	// changes advance them sooner.
	Tick time.Duration
	Now  func() time.Time
}

// Controller advances every rollout of one tenant.
type Controller struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status map[string]streams.NodeStatus
	moved  chan struct{}

	// unlinked is since when each site has been seen unlinked (by this
	// controller: a restart starts the clock again).
	unlinked map[string]time.Time
	// running says the last pass found a rollout to advance or track.
	running atomic.Bool
}

// New returns a controller; Run starts it.
func New(cfg Config) *Controller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Stale <= 0 {
		cfg.Stale = 3 * streams.StatusHeartbeat
	}
	if cfg.LinkGrace <= 0 {
		cfg.LinkGrace = 15 * time.Second
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 500 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Controller{cfg: cfg, log: cfg.Log, status: map[string]streams.NodeStatus{}, moved: make(chan struct{}, 1),
		unlinked: map[string]time.Time{}}
}

// Run advances rollouts until ctx is done.
func (c *Controller) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.followStatus(ctx) })
	tick := time.NewTicker(c.cfg.Tick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-c.moved:
			// Every status heartbeat moves (1,000 nodes: 100 a second):
			// only a running rollout wants a pass sooner than the tick.
			// A pass lists the rollouts, an ephemeral consumer at the hub
			// whose creation nats-server announces to every linked leaf,
			// so passing on every move cost the hub ~60% of a core at 770
			// sites doing nothing.
			if !c.running.Load() {
				continue
			}
		}
		if err := c.pass(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("rollout pass failed; retrying", "err", err)
		}
	}
}

// followStatus keeps the last status of every node, from a watch of the
// status bucket (restarted if it ends).
func (c *Controller) followStatus(ctx context.Context) {
	natsutil.FollowKV(ctx, c.cfg.JS, streams.StatusBucket, c.log, func(e jetstream.KeyValueEntry) {
		c.mu.Lock()
		if e.Operation() != jetstream.KeyValuePut {
			delete(c.status, e.Key())
		} else {
			var ns streams.NodeStatus
			if json.Unmarshal(e.Value(), &ns) == nil {
				c.status[e.Key()] = ns
			}
		}
		c.mu.Unlock()
		select {
		case c.moved <- struct{}{}:
		default:
		}
	})
}

// pass advances every rollout that is not finished, and keeps following
// the nodes of finished ones that were pending or updating.
func (c *Controller) pass(ctx context.Context) error {
	kv, err := c.cfg.JS.KeyValue(ctx, streams.RolloutsBucket)
	if err != nil {
		return err
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return err
	}
	var errs []error
	running := false
	for name := range lister.Keys() {
		active, err := c.advance(ctx, kv, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("rollout %s: %w", name, err))
		}
		running = running || active || err != nil
	}
	c.running.Store(running)
	return errors.Join(errs...)
}

// advance moves one rollout on; active says it is running or still
// tracking nodes.
func (c *Controller) advance(ctx context.Context, kv jetstream.KeyValue, name string) (active bool, err error) {
	r, rev, err := load(ctx, kv, name)
	if err != nil {
		return false, err
	}
	if r.Done() && !r.tracking() {
		return false, nil
	}
	before, _ := json.Marshal(r)
	// The watch writes the status map: copy what this rollout needs.
	c.mu.Lock()
	st := make(map[string]streams.NodeStatus, len(r.Nodes))
	for k := range r.Nodes {
		if s, ok := c.status[k]; ok {
			st[k] = s
		}
	}
	c.mu.Unlock()
	if err := c.step(ctx, r, st); err != nil {
		return true, err
	}
	after, _ := json.Marshal(r)
	if bytes.Equal(before, after) {
		return true, nil
	}
	r.Updated = c.cfg.Now().UTC()
	after, _ = json.Marshal(r)
	if _, err := kv.Update(ctx, name, after, rev); err != nil {
		if conflict(err) {
			// An operator paused or aborted it meanwhile; the next pass
			// starts from their value. Puts made here are idempotent.
			return true, nil
		}
		return true, err
	}
	return true, nil
}

// tracking says a finished rollout still has nodes whose outcome is open.
func (r *Rollout) tracking() bool {
	for _, n := range r.Nodes {
		if n.Phase == NodeUpdating || n.Phase == NodePending {
			return true
		}
	}
	return false
}

// step judges every node from its status, then stops, restores or puts.
func (c *Controller) step(ctx context.Context, r *Rollout, st map[string]streams.NodeStatus) error {
	now := c.cfg.Now()
	raw := map[string]bool{} // Reachable once per site and pass
	linkedNow := func(site string) (v, known bool) {
		if c.cfg.Reachable == nil {
			return true, false
		}
		v, ok := raw[site]
		if !ok {
			v = c.cfg.Reachable(site)
			raw[site] = v
			if v {
				delete(c.unlinked, site)
			} else if _, seen := c.unlinked[site]; !seen {
				c.unlinked[site] = now
			}
		}
		return v, true
	}
	// reachable: linked, or unlinked for less than the grace.
	reachable := func(site string) bool {
		if v, _ := linkedNow(site); v {
			return true
		}
		return now.Sub(c.unlinked[site]) < c.cfg.LinkGrace
	}
	for _, k := range sortedKeys(r.Nodes) {
		n := r.Nodes[k]
		if n.Phase == NodeUpdating || n.Phase == NodePending {
			site, _, _ := strings.Cut(k, ".")
			if v, known := linkedNow(site); known && v {
				n.Seen = true // linked since the put: its mirror may have it
			}
			c.judge(k, n, st, reachable, now)
		}
	}
	counts := r.Count(nil)
	if !r.Done() && counts[NodeFailed] > r.Policy.FailureBudget {
		r.State, r.Finished = Failed, now.UTC()
		r.Reason = fmt.Sprintf("%d node(s) failed, budget %d: %s", counts[NodeFailed], r.Policy.FailureBudget, r.failures(3))
		c.log.Warn("rollout stopped", "fleet", r.Fleet, "generation", r.Generation, "reason", r.Reason)
	}
	if r.State == Failed || r.State == Aborted {
		return c.stop(ctx, r, st)
	}
	if r.State != Running {
		return nil
	}
	bp, err := c.cfg.JS.KeyValue(ctx, streams.BlueprintsBucket)
	if err != nil {
		return err
	}
	staged, err := c.cfg.JS.KeyValue(ctx, streams.StagedBucket)
	if err != nil {
		return err
	}
	for r.Batch < len(r.Batches) {
		if err := c.putBatch(ctx, r, bp, staged, linkedNow, now); err != nil {
			return err
		}
		if !r.gatePassed(r.Batch) {
			return nil
		}
		if r.Batch+1 == len(r.Batches) {
			r.State, r.Finished = Completed, now.UTC()
			c.log.Info("rollout completed", "fleet", r.Fleet, "generation", r.Generation, "pending", r.Count(nil)[NodePending])
			return nil
		}
		r.Batch++
		c.log.Info("rollout batch started", "fleet", r.Fleet, "batch", r.Batch+1, "of", len(r.Batches), "nodes", len(r.Batches[r.Batch]))
	}
	return nil
}

// judge moves an updating or pending node by its status.
func (c *Controller) judge(key string, n *Node, st map[string]streams.NodeStatus, reachable func(string) bool, now time.Time) {
	s, ok := st[key]
	site, _, _ := strings.Cut(key, ".")
	if ok && n.Revision > 0 && (s.DesiredRevision >= n.Revision || s.Reported.After(n.Since)) {
		// It reported the target, or reported at all after the put: its
		// link was up after the put, so its mirror may have the target.
		n.Seen = true
	}
	switch {
	case ok && s.RolledBack != nil && s.RolledBack.Revision == n.Revision:
		n.Phase, n.Reason = NodeFailed, "rolled back: "+s.RolledBack.Reason
	case ok && s.DesiredRevision == n.Revision && len(s.Invalid) > 0:
		n.Phase, n.Reason = NodeFailed, "refused: "+strings.Join(s.Invalid, "; ")
	case ok && n.Revision > 0 && s.GoodRevision >= n.Revision:
		n.Phase, n.Reason = NodeGood, ""
	case !ok:
		n.Phase, n.Reason = NodePending, "no status from the node yet"
	case !reachable(site):
		n.Phase, n.Reason = NodePending, "site not linked to the hub"
	case now.Sub(s.Reported) > c.cfg.Stale:
		n.Phase, n.Reason = NodePending, fmt.Sprintf("status %s old", now.Sub(s.Reported).Round(time.Second))
	default:
		n.Phase, n.Reason = NodeUpdating, s.Phase
		if s.Gate != "" {
			n.Reason += ": " + s.Gate
		}
	}
	if n.Phase == NodePending && n.Seen {
		n.Reason += "; it may have the revision (linked after the put), so its batch waits for its verdict"
	}
}

// putBatch puts the staged envelope into the keys of the batch's waiting
// nodes, at most MaxPerSite updating nodes per site.
func (c *Controller) putBatch(ctx context.Context, r *Rollout, bp, staged jetstream.KeyValue, linkedNow func(string) (bool, bool), now time.Time) error {
	busy := map[string]int{}
	for k, n := range r.Nodes {
		if n.Phase == NodeUpdating || n.Phase == NodePending {
			s, _, _ := strings.Cut(k, ".")
			busy[s]++
		}
	}
	for _, k := range r.Batches[r.Batch] {
		n := r.Nodes[k]
		if n.Phase != NodeWaiting {
			continue
		}
		site, _, _ := strings.Cut(k, ".")
		if r.Policy.MaxPerSite > 0 && busy[site] >= r.Policy.MaxPerSite {
			continue
		}
		env, err := fleet.LoadStaged(ctx, staged, r.Fleet, k)
		if err != nil {
			return err
		}
		var prev uint64
		cur, err := bp.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		case bytes.Equal(cur.Value(), env):
			// Put before a restart of the hub, or already there.
			n.Phase, n.Revision, n.Since = NodeUpdating, cur.Revision(), now.UTC()
			busy[site]++
			continue
		default:
			prev = cur.Revision()
		}
		var rev uint64
		if prev == 0 {
			rev, err = bp.Create(ctx, k, env)
		} else {
			rev, err = bp.Update(ctx, k, env, prev)
		}
		if err != nil {
			return fmt.Errorf("putting %s: %w", k, err)
		}
		n.Phase, n.Revision, n.Previous, n.Since = NodeUpdating, rev, prev, now.UTC()
		if v, known := linkedNow(site); known && v {
			n.Seen = true // put while its site is linked: the mirror delivers it now
		}
		busy[site]++
		c.log.Info("rollout put", "fleet", r.Fleet, "node", k, "revision", rev, "batch", r.Batch+1)
	}
	return nil
}

// gatePassed says every node of batches up to b has an outcome or is
// pending without the target having reached it: a site offline since
// before the put does not hold the gate. A node that may have the target
// (its site was linked at or after the put) and then went quiet does: its
// verdict (good, or rolled back by its own guard) may be the one that
// stops a bad revision. Failures are the budget's business.
func (r *Rollout) gatePassed(b int) bool {
	for i := 0; i <= b; i++ {
		for _, k := range r.Batches[i] {
			switch n := r.Nodes[k]; n.Phase {
			case NodeWaiting, NodeUpdating:
				return false
			case NodePending:
				if n.Seen {
					return false
				}
			}
		}
	}
	return true
}

// stop ends a failed or aborted rollout: nodes not reached are skipped,
// and nodes whose key holds the target but that never saw it (their status
// shows an older desired revision) get their previous blueprint back, so a
// site that returns later converges to the last good one, not to a
// revision the rollout gave up on. Nodes that already saw it decide for
// themselves (good, or rolled back by their own guard).
func (c *Controller) stop(ctx context.Context, r *Rollout, st map[string]streams.NodeStatus) error {
	var bp jetstream.KeyValue
	for _, k := range sortedKeys(r.Nodes) {
		n := r.Nodes[k]
		switch n.Phase {
		case NodeWaiting:
			n.Phase, n.Reason = NodeSkipped, "rollout "+strings.ToLower(r.State)
			continue
		case NodeUpdating, NodePending:
		default:
			continue
		}
		if s, ok := st[k]; ok && s.DesiredRevision >= n.Revision {
			continue // it has the target; its own guard decides
		}
		if bp == nil {
			var err error
			if bp, err = c.cfg.JS.KeyValue(ctx, streams.BlueprintsBucket); err != nil {
				return err
			}
		}
		if err := restore(ctx, bp, k, n); err != nil {
			c.log.Warn("could not restore the previous blueprint", "fleet", r.Fleet, "node", k, "err", err)
			continue
		}
		n.Phase, n.Reason = NodeRestored, fmt.Sprintf("previous revision %d put back", n.Previous)
		c.log.Info("rollout restored previous blueprint", "fleet", r.Fleet, "node", k, "previous", n.Previous)
	}
	return nil
}

// restore puts back the value the rollout replaced, if the key still holds
// the rollout's; without a previous value the key is deleted (an agent
// refuses an unsigned delete and keeps what it runs, so it shows Invalid).
func restore(ctx context.Context, bp jetstream.KeyValue, k string, n *Node) error {
	cur, err := bp.Get(ctx, k)
	if err != nil {
		return err
	}
	if cur.Revision() != n.Revision {
		return nil // someone put something newer; leave it
	}
	if n.Previous == 0 {
		return bp.Delete(ctx, k, jetstream.LastRevision(n.Revision))
	}
	old, err := bp.GetRevision(ctx, k, n.Previous)
	if err != nil {
		return fmt.Errorf("revision %d: %w", n.Previous, err)
	}
	_, err = bp.Update(ctx, k, old.Value(), n.Revision)
	return err
}

// failures describes up to max failed nodes.
func (r *Rollout) failures(max int) string {
	var out []string
	for _, k := range sortedKeys(r.Nodes) {
		if n := r.Nodes[k]; n.Phase == NodeFailed {
			if len(out) == max {
				out = append(out, "...")
				break
			}
			out = append(out, k+": "+n.Reason)
		}
	}
	return strings.Join(out, "; ")
}

func sortedKeys(m map[string]*Node) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
