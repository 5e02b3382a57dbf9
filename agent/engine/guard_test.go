package engine_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// guarded is a blueprint with spec.rollback (minHealth 0.9, for 2s,
// deadline 10s) writing content to /etc/hello.conf; with blocked, it also
// writes under /etc/blocked, which the test makes a regular file, so the
// apply fails.
func guarded(name, content string, blocked bool) []byte {
	s := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: " + name + "}\nspec:\n" +
		"  rollback: {minHealth: 0.9, for: 2s, deadline: 10s}\n" +
		"  files:\n    - path: /etc/hello.conf\n      content: \"" + content + "\"\n"
	if blocked {
		s += "    - path: /etc/blocked/x.conf\n      content: \"x\"\n"
	}
	return []byte(s)
}

// fakeClock is the engine's clock in these tests: the rollback guard's
// deadline and period pass only when the test says so.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fakeHealth is the solution's health as the agent's monitor would say it.
type fakeHealth struct {
	mu    sync.Mutex
	value float64
	why   string
	calls atomic.Int64
}

func (f *fakeHealth) set(v float64, why string) { f.mu.Lock(); f.value, f.why = v, why; f.mu.Unlock() }
func (f *fakeHealth) fn(context.Context, *blueprint.Blueprint) (float64, string) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.value, f.why
}

// waitJudged waits until the trial has been judged n times in all: its
// health clock is running from the fake clock's present.
func (f *fakeHealth) waitJudged(t *testing.T, n int64) {
	t.Helper()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if c := f.calls.Load(); c < n {
			return fmt.Errorf("health read %d times, want %d", c, n)
		}
		return nil
	})
}

type guardRig struct {
	*harness
	clock  *fakeClock
	health *fakeHealth
}

func startGuarded(t *testing.T, root, state string, gate engine.Gate, clock *fakeClock, health *fakeHealth) *guardRig {
	t.Helper()
	h := startWith(t, root, state, func(c *engine.Config) {
		c.Gate, c.Now, c.Health = gate, clock.Now, health.fn
	})
	return &guardRig{h, clock, health}
}

func newGuarded(t *testing.T, gate engine.Gate) *guardRig {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	health := &fakeHealth{value: 1}
	return startGuarded(t, t.TempDir(), t.TempDir(), gate, clock, health)
}

// waitRolledBack waits for the node to report revision bad rolled back to
// good, running good's file again.
func (g *guardRig) waitRolledBack(t *testing.T, bad, good uint64, content string) engine.Status {
	t.Helper()
	s := g.waitPhase(t, engine.PhaseRolledBack, good)
	if s.RolledBack == nil || s.RolledBack.Revision != bad || s.RolledBack.To != good || s.DesiredRevision != bad {
		t.Fatalf("rolled back status: desired %d, rolledBack %+v", s.DesiredRevision, s.RolledBack)
	}
	if content == "" {
		if _, err := os.Stat(filepath.Join(g.root, "etc/hello.conf")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("rolled back to nothing, but hello.conf is there (%v)", err)
		}
	} else {
		g.waitFile(t, content)
	}
	return s
}

func TestRollbackOnApplyErrorsPastDeadline(t *testing.T) {
	g := newGuarded(t, nil)
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitFile(t, "one")
	if s := g.waitPhase(t, engine.PhaseConverged, 1); s.GoodRevision != 1 {
		t.Fatalf("a revision without spec.rollback is good once converged; good %d", s.GoodRevision)
	}

	check.NoError(t, os.WriteFile(filepath.Join(g.root, "etc/blocked"), []byte("a file, not a directory"), 0o644))
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", true)})
	g.waitFile(t, "two") // the trial did run: its first file was written
	g.waitPhase(t, engine.PhaseDegraded, 1)

	g.clock.Add(11 * time.Second)
	s := g.waitRolledBack(t, 2, 1, "one")
	if !strings.Contains(s.RolledBack.Reason, "etc/blocked") || s.GoodRevision != 1 {
		t.Fatalf("reason %q, good %d", s.RolledBack.Reason, s.GoodRevision)
	}
}

func TestRollbackOnLowHealthPastDeadline(t *testing.T) {
	g := newGuarded(t, nil)
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitPhase(t, engine.PhaseConverged, 1)

	g.health.set(0, "container:web exited: exit code 1")
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
	g.waitFile(t, "two")
	s := g.waitPhase(t, engine.PhaseConverged, 2)
	if s.GoodRevision != 1 || !strings.Contains(s.Message, "on trial") {
		t.Fatalf("on trial: good %d, message %q", s.GoodRevision, s.Message)
	}
	g.health.waitJudged(t, 1)

	g.clock.Add(9 * time.Second) // inside the deadline: still on trial
	g.health.waitJudged(t, g.health.calls.Load()+1)
	if s := g.status(); s.RolledBack != nil || s.AppliedRevision != 2 {
		t.Fatalf("rolled back before the deadline: %+v", s.RolledBack)
	}

	g.clock.Add(2 * time.Second)
	s = g.waitRolledBack(t, 2, 1, "one")
	if want := "health 0.00 < 0.90 for 11s: container:web exited: exit code 1"; s.RolledBack.Reason != want {
		t.Fatalf("reason %q, want %q", s.RolledBack.Reason, want)
	}
}

func TestGoodOnceHealthHoldsForPeriod(t *testing.T) {
	g := newGuarded(t, nil)
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitPhase(t, engine.PhaseConverged, 1)

	g.health.set(0.95, "")
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
	g.waitFile(t, "two")
	g.health.waitJudged(t, 1)
	if s := g.status(); s.GoodRevision != 1 {
		t.Fatalf("good %d before health held for its period", s.GoodRevision)
	}
	g.clock.Add(2 * time.Second)
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := g.status(); s.GoodRevision != 2 || s.Phase != engine.PhaseConverged {
			return fmt.Errorf("good %d, phase %s", s.GoodRevision, s.Phase)
		}
		return nil
	})

	// Good is final: low health past the deadline changes nothing now.
	g.health.set(0, "flaky")
	g.clock.Add(time.Minute)
	g.eng.Trigger("test")
	calls := g.health.calls.Load()
	g.waitPhase(t, engine.PhaseConverged, 2)
	if g.health.calls.Load() != calls || g.status().RolledBack != nil {
		t.Fatal("a good revision is still being judged")
	}
}

// The deadline starts when the engine works on the revision, not when it
// arrives: a revision staged by a closed maintenance window does not use
// up its time.
func TestDeadlineWaitsWhileStaged(t *testing.T) {
	gate := &closedGate{open: true}
	g := newGuarded(t, gate)
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitPhase(t, engine.PhaseConverged, 1)

	gate.mu.Lock()
	gate.open = false
	gate.mu.Unlock()
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
	g.waitPhase(t, engine.PhaseStaged, 1)
	g.clock.Add(time.Hour)
	g.waitPhase(t, engine.PhaseStaged, 1)

	gate.mu.Lock()
	gate.open = true
	gate.mu.Unlock()
	g.waitFile(t, "two")
	g.health.waitJudged(t, 1)
	if s := g.status(); s.RolledBack != nil {
		t.Fatalf("rolled back on a deadline that ran while staged: %+v", s.RolledBack)
	}
	g.clock.Add(2 * time.Second)
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := g.status(); s.GoodRevision != 2 || s.RolledBack != nil {
			return fmt.Errorf("good %d, rolledBack %+v", s.GoodRevision, s.RolledBack)
		}
		return nil
	})
}

// unhealthyTrial starts an engine on root and state, converges revision 1
// (good) and puts revision 2 on trial with health 0.5, judged once.
func unhealthyTrial(t *testing.T, root, state string) *guardRig {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	g := startGuarded(t, root, state, nil, clock, &fakeHealth{value: 1})
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitPhase(t, engine.PhaseConverged, 1)
	g.health.set(0.5, "sensor:temp no reading")
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
	g.waitFile(t, "two")
	g.health.waitJudged(t, 1)
	return g
}

// A refused revision is never tried again: not when offered again, not
// after a restart; a newer revision clears the refusal.
func TestRolledBackRevisionNotRetried(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	g := unhealthyTrial(t, root, state)
	clock, health := g.clock, g.health
	clock.Add(11 * time.Second)
	g.waitRolledBack(t, 2, 1, "one")

	// Offered again (a re-watch, the level check): the next pass must not
	// take it. The revision's own file would be written in that pass.
	reoffer := func(g *guardRig) {
		t.Helper()
		clock.Add(time.Second)
		after := clock.Now()
		g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			if s := g.status(); s.LastReconcile.Before(after) {
				return errors.New("no pass since the offer")
			}
			return nil
		})
		g.waitRolledBack(t, 2, 1, "one")
	}
	reoffer(g)

	g.stop()
	g = startGuarded(t, root, state, nil, clock, health)
	g.waitRolledBack(t, 2, 1, "one") // remembered with no offer at all
	reoffer(g)

	health.set(1, "")
	g.eng.Offer(engine.Candidate{Revision: 3, Data: guarded("c", "three", false)})
	g.waitFile(t, "three")
	s := g.waitPhase(t, engine.PhaseConverged, 3)
	if s.RolledBack != nil || s.DesiredRevision != 3 {
		t.Fatalf("a newer revision keeps the old refusal: %+v, desired %d", s.RolledBack, s.DesiredRevision)
	}
	calls := health.calls.Load()
	health.waitJudged(t, calls+1)
	clock.Add(2 * time.Second)
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := g.status(); s.GoodRevision != 3 {
			return fmt.Errorf("good %d", s.GoodRevision)
		}
		return nil
	})
}

// A trial's deadline counts across a restart: a node that restarts in a
// loop still rolls back.
func TestTrialDeadlineSurvivesRestart(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	g := unhealthyTrial(t, root, state)
	g.stop()

	g.clock.Add(11 * time.Second)
	g = startGuarded(t, root, state, nil, g.clock, g.health)
	g.waitRolledBack(t, 2, 1, "one")
}

// With no good revision yet, a failing first revision leaves the node on
// the empty blueprint, reported as rolled back to revision 0.
func TestFirstRevisionFailsRollsBackToNothing(t *testing.T) {
	g := newGuarded(t, nil)
	check.NoError(t, os.MkdirAll(filepath.Join(g.root, "etc"), 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(g.root, "etc/blocked"), []byte("file"), 0o644))
	g.eng.Offer(engine.Candidate{Revision: 1, Data: guarded("b", "one", true)})
	g.waitFile(t, "one")
	g.waitPhase(t, engine.PhaseDegraded, 0)
	g.clock.Add(11 * time.Second)
	s := g.waitRolledBack(t, 1, 0, "")
	if s.GoodRevision != 0 || s.AppliedRevision != 0 {
		t.Fatalf("good %d applied %d", s.GoodRevision, s.AppliedRevision)
	}
}

// modeGate is a gate the test switches between open, a closed window
// (repairs only) and an operator hold (nothing).
type modeGate struct {
	mu     sync.Mutex
	update bool
	repair bool
}

func (g *modeGate) set(update, repair bool) {
	g.mu.Lock()
	g.update, g.repair = update, repair
	g.mu.Unlock()
}

func (g *modeGate) Check(now time.Time, applied, target *blueprint.Blueprint) engine.Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	return engine.Decision{Update: g.update, Repair: g.repair, Reason: "test gate", Recheck: now.Add(20 * time.Millisecond)}
}

// A closed maintenance window does not keep a refused revision running
// (its trial began inside a window); an operator hold does, until lifted.
func TestRollbackPassesWindowButWaitsForHold(t *testing.T) {
	gate := &modeGate{update: true, repair: true}
	g := newGuarded(t, gate)
	g.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	g.waitPhase(t, engine.PhaseConverged, 1)

	g.health.set(0, "down")
	g.eng.Offer(engine.Candidate{Revision: 2, Data: guarded("b", "two", false)})
	g.waitFile(t, "two")
	g.health.waitJudged(t, 1)
	gate.set(false, true) // the window closes
	g.clock.Add(11 * time.Second)
	g.waitRolledBack(t, 2, 1, "one")

	gate.set(true, true)
	g.eng.Offer(engine.Candidate{Revision: 3, Data: guarded("c", "three", false)})
	g.waitFile(t, "three")
	g.health.waitJudged(t, g.health.calls.Load()+1)
	gate.set(false, false) // an operator hold
	g.clock.Add(11 * time.Second)
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		s := g.status()
		if s.Phase != engine.PhaseHeld || s.RolledBack == nil || s.RolledBack.Revision != 3 || s.AppliedRevision != 3 {
			return fmt.Errorf("phase %s applied %d rolledBack %+v", s.Phase, s.AppliedRevision, s.RolledBack)
		}
		return nil
	})
	g.waitFile(t, "three")
	gate.set(true, true)
	g.waitRolledBack(t, 3, 1, "one")
}

// State written before the guard existed has no good.json: the applied
// revision counts as good, so a guarded revision that was still staged at
// the upgrade has somewhere to roll back to.
func TestAppliedBeforeGuardCountsAsGood(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	gate := &closedGate{open: true}
	h := start(t, root, state, gate)
	h.eng.Offer(engine.Candidate{Revision: 7, Data: doc("a", "seven")})
	h.waitPhase(t, engine.PhaseConverged, 7)
	gate.mu.Lock()
	gate.open = false
	gate.mu.Unlock()
	h.eng.Offer(engine.Candidate{Revision: 8, Data: guarded("b", "eight", false)})
	h.waitPhase(t, engine.PhaseStaged, 7)
	h.stop()
	check.NoError(t, os.Remove(filepath.Join(state, "engine/good.json")))

	clock := &fakeClock{t: time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)}
	g := startGuarded(t, root, state, nil, clock, &fakeHealth{value: 0})
	g.waitFile(t, "eight")
	g.health.waitJudged(t, 1)
	if s := g.status(); s.GoodRevision != 7 {
		t.Fatalf("good %d after an upgrade, want the applied 7", s.GoodRevision)
	}
	clock.Add(11 * time.Second)
	g.waitRolledBack(t, 8, 7, "seven")
}
