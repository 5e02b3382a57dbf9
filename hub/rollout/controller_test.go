package rollout

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// ctlEnv drives a Controller pass by pass against a real hub, with the
// nodes' statuses and the sites' links set by the test and a fake clock.
type ctlEnv struct {
	t   *testing.T
	js  jetstream.JetStream
	bp  jetstream.KeyValue
	c   *Controller
	now time.Time

	mu       sync.Mutex
	unlinked map[string]bool
}

func newCtlEnv(t *testing.T, p fleet.Policy, nodes ...string) *ctlEnv {
	h := stack.Hub(t)
	nc, err := nats.Connect(h.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	check.NoError(t, hub.Bootstrap(ctx, js, 1))
	e := &ctlEnv{t: t, js: js, now: time.Unix(1e9, 0), unlinked: map[string]bool{}}
	e.bp, err = js.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	var staged []fleet.Staged
	for _, k := range nodes {
		_, err := e.bp.PutString(ctx, k, "old "+k)
		check.NoError(t, err)
		staged = append(staged, fleet.Staged{Key: k, Envelope: []byte("new " + k)})
	}
	check.NoError(t, fleet.Stage(ctx, js, fleet.Meta{Fleet: "f", Generation: "1", Nodes: nodes, Policy: p}, staged))
	e.c = New(Config{JS: js, Log: stack.Log(), LinkGrace: 10 * time.Second,
		Now: func() time.Time { return e.now },
		Reachable: func(site string) bool {
			e.mu.Lock()
			defer e.mu.Unlock()
			return !e.unlinked[site]
		}})
	_, err = Start(ctx, js, "f", e.now)
	check.NoError(t, err)
	return e
}

// pass advances the clock by d and runs one controller pass.
func (e *ctlEnv) pass(d time.Duration) *Rollout {
	e.t.Helper()
	e.now = e.now.Add(d)
	check.NoError(e.t, e.c.pass(context.Background()))
	r, _, err := Load(context.Background(), e.js, "f")
	check.NoError(e.t, err)
	return r
}

// report sets a node's status as the hub would hold it, reported now.
func (e *ctlEnv) report(key string, fn func(*streams.NodeStatus)) {
	ns := streams.NodeStatus{Phase: "Applying", Reported: e.now}
	fn(&ns)
	e.c.mu.Lock()
	e.c.status[key] = ns
	e.c.mu.Unlock()
}

func (e *ctlEnv) value(key string) string {
	en, err := e.bp.Get(context.Background(), key)
	if err != nil {
		return err.Error()
	}
	return string(en.Value())
}

func phases(r *Rollout, keys ...string) string {
	var out []string
	for _, k := range keys {
		out = append(out, k+"="+r.Nodes[k].Phase)
	}
	return fmt.Sprint(out)
}

// At most maxPerSite nodes of a site update at once; the first failure past
// the budget stops the rollout: nodes not reached are skipped, and a node
// whose key holds the target but that never saw it gets its previous
// blueprint back.
func TestDisruptionAndFailureBudgets(t *testing.T) {
	e := newCtlEnv(t, fleet.Policy{MaxPerSite: 1}, "a.n1", "a.n2", "a.n3", "b.n1")
	r := e.pass(0)
	if got := phases(r, "a.n1", "a.n2", "a.n3", "b.n1"); got != "[a.n1=Updating a.n2=Waiting a.n3=Waiting b.n1=Updating]" {
		t.Fatalf("first pass: %s", got)
	}
	if e.value("a.n1") != "new a.n1" || e.value("a.n2") != "old a.n2" {
		t.Fatalf("keys: a.n1=%q a.n2=%q", e.value("a.n1"), e.value("a.n2"))
	}
	revA1 := r.Nodes["a.n1"].Revision
	e.report("a.n1", func(s *streams.NodeStatus) {
		s.DesiredRevision, s.AppliedRevision, s.GoodRevision = revA1, revA1, revA1
	})
	e.report("b.n1", func(s *streams.NodeStatus) { s.DesiredRevision = r.Nodes["b.n1"].Revision })
	r = e.pass(time.Second)
	if got := phases(r, "a.n1", "a.n2", "a.n3"); got != "[a.n1=Good a.n2=Updating a.n3=Waiting]" {
		t.Fatalf("after a.n1 is good: %s", got)
	}
	// a.n2's status still says the old revision: it has not seen the target.
	e.report("a.n2", func(s *streams.NodeStatus) { s.DesiredRevision = 1 })
	revB1 := r.Nodes["b.n1"].Revision
	e.report("b.n1", func(s *streams.NodeStatus) {
		s.DesiredRevision, s.Phase = revB1, "RolledBack"
		s.RolledBack = &streams.RolledBack{Revision: revB1, Reason: "health 0.00 < 1.00"}
	})
	r = e.pass(time.Second)
	if r.State != Failed || !contains(r.Reason, "b.n1: rolled back: health 0.00") {
		t.Fatalf("rollout %s: %q", r.State, r.Reason)
	}
	if got := phases(r, "a.n1", "a.n2", "a.n3", "b.n1"); got != "[a.n1=Good a.n2=Restored a.n3=Skipped b.n1=Failed]" {
		t.Fatalf("after the failure: %s", got)
	}
	if got := e.value("a.n2"); got != "old a.n2" {
		t.Errorf("a.n2's key holds %q, want its previous blueprint back", got)
	}
	if got := e.value("a.n3"); got != "old a.n3" {
		t.Errorf("a.n3's key holds %q, want it untouched", got)
	}
	if got := e.value("a.n1"); got != "new a.n1" {
		t.Errorf("a.n1, good on the target, holds %q", got)
	}
}

// A site unlinked past the grace is pending. Put while it was already
// offline, it does not hold its batch; put while it was linked (its mirror
// may have the target), it holds the batch until its verdict arrives.
func TestPendingHoldsTheGateOnlyIfTheTargetMayHaveReachedIt(t *testing.T) {
	for _, linkedAtPut := range []bool{false, true} {
		t.Run(fmt.Sprint("linkedAtPut=", linkedAtPut), func(t *testing.T) {
			e := newCtlEnv(t, fleet.Policy{Batches: []string{"1", "100%"}}, "a.n1", "b.n1")
			unlink := func() {
				e.mu.Lock()
				e.unlinked["a"] = true
				e.mu.Unlock()
			}
			e.report("a.n1", func(s *streams.NodeStatus) { s.DesiredRevision = 1 })
			e.report("b.n1", func(s *streams.NodeStatus) {})
			if !linkedAtPut {
				unlink()
			}
			r := e.pass(0) // the put
			if r.Nodes["a.n1"].Revision == 0 {
				t.Fatalf("a.n1 not put: %s", phases(r, "a.n1"))
			}
			unlink()
			r = e.pass(time.Second) // unlinked, within the grace: still updating
			if got := phases(r, "a.n1", "b.n1"); got != "[a.n1=Updating b.n1=Waiting]" {
				t.Fatalf("within the grace: %s", got)
			}
			e.pass(11 * time.Second)
			r = e.pass(time.Second)
			want := "[a.n1=Pending b.n1=Updating]"
			if linkedAtPut {
				want = "[a.n1=Pending b.n1=Waiting]"
			}
			if got := phases(r, "a.n1", "b.n1"); got != want {
				t.Fatalf("past the grace: %s, want %s", got, want)
			}
			if r.State != Running {
				t.Fatalf("rollout %s", r.State)
			}
		})
	}
}

// An operator's abort stops the puts and restores nodes that never saw the
// target; pause and resume steer it; a finished rollout refuses control.
func TestPauseResumeAbort(t *testing.T) {
	e := newCtlEnv(t, fleet.Policy{Batches: []string{"1", "100%"}}, "a.n1", "a.n2")
	ctx := context.Background()
	_, err := Control(ctx, e.js, "f", Paused)
	check.NoError(t, err)
	r := e.pass(0)
	if r.State != Paused || r.Nodes["a.n1"].Phase != NodeWaiting {
		t.Fatalf("paused rollout put something: %s %s", r.State, phases(r, "a.n1"))
	}
	_, err = Control(ctx, e.js, "f", Running)
	check.NoError(t, err)
	r = e.pass(0)
	if r.Nodes["a.n1"].Phase != NodeUpdating {
		t.Fatalf("resumed: %s", phases(r, "a.n1"))
	}
	_, err = Control(ctx, e.js, "f", Aborted)
	check.NoError(t, err)
	r = e.pass(0)
	if got := phases(r, "a.n1", "a.n2"); got != "[a.n1=Restored a.n2=Skipped]" || r.State != Aborted {
		t.Fatalf("aborted: %s %s", r.State, got)
	}
	if got := e.value("a.n1"); got != "old a.n1" {
		t.Errorf("a.n1 holds %q after the abort", got)
	}
	if _, err := Control(ctx, e.js, "f", Running); err == nil || !contains(err.Error(), "Aborted already") {
		t.Errorf("resuming an aborted rollout: %v", err)
	}
	if _, err := Start(ctx, e.js, "f", e.now); err != nil {
		t.Errorf("a new rollout after an abort: %v", err)
	}
	if _, err := Start(ctx, e.js, "f", e.now); err == nil || !contains(err.Error(), "abort it first") {
		t.Errorf("a second rollout over a running one: %v", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
