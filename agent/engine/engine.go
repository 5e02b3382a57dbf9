// Package engine is the agent's level-based reconcile loop: it keeps the last
// good blueprint on disk, observes the node through its drivers, and applies
// what they plan, in dependency order, with backoff on failure.
package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/throttle"
	"github.com/alpha-edge/alpha/streams"
)

// Candidate is a revision of the node's blueprint as it arrived from the site.
type Candidate struct {
	Revision uint64
	Data     []byte
	Deleted  bool  // the key was deleted or purged: converge to nothing
	Err      error // refused before parsing (e.g. a bad signature)
}

// Phase summarizes where the node stands; it is streams.NodeStatus.Phase.
type Phase = string

// Phases, from the node's point of view.
const (
	PhaseConverged Phase = "Converged"
	PhaseApplying  Phase = "Applying"
	PhaseDegraded  Phase = "Degraded" // some change failed; retrying with backoff
	PhaseInvalid   Phase = "Invalid"  // the newest revision was refused; the last good one runs
	PhaseStaged    Phase = "Staged"   // a new revision waits for a maintenance window
	PhaseHeld      Phase = "Held"     // an operator hold pauses repairs and updates
	PhaseRemoved   Phase = "Removed"  // the key is gone and everything was removed
	// PhaseRolledBack: the newest revision failed its rollback guard
	// (spec.rollback) and the node runs its last-known-good one again.
	PhaseRolledBack Phase = "RolledBack"
	PhaseNone       Phase = "NoBlueprint"
)

// Status is what the engine reports after every pass: its part of the node's
// status (revisions, phase, errors, resources); the agent fills in the rest
// (site and node, holds, compliance, health).
type Status struct {
	streams.NodeStatus
	// Applied is the blueprint last converged (nil before the first), for
	// hooks that report on it (maintenance windows).
	Applied *blueprint.Blueprint `json:"-"`
}

// Decision is a Gate's answer.
type Decision struct {
	Update  bool      // a new revision may be applied
	Repair  bool      // drift may be repaired
	Reason  string    // shown in status when something is held back
	Recheck time.Time // when the answer may change (a window opens, a hold expires)
}

// Gate decides whether the engine may change the node now. Maintenance
// windows and operator holds implement it; it runs on the node so it works
// offline.
type Gate interface {
	Check(now time.Time, applied, target *blueprint.Blueprint) Decision
}

// Repair describes one drift repair, for drift events.
type Repair struct {
	Driver string
	Change driver.Change
	Err    error
	At     time.Time
}

// Config builds an Engine.
type Config struct {
	Drivers  []driver.Driver
	StateDir string // where desired and applied revisions persist
	Log      *slog.Logger
	Resync   time.Duration // periodic full reconcile (default 30s)
	Now      func() time.Time
	Gate     Gate
	OnStatus func(Status)
	OnRepair func(Repair)
	// Prepare, if set, turns the blueprint into the one the drivers see, e.g.
	// resolving ${cloud.NAME.OUTPUT} references. An error keeps the affected
	// pass from applying and is reported like a driver error.
	Prepare func(ctx context.Context, bp *blueprint.Blueprint) (*blueprint.Blueprint, error)
	// Health, if set, returns the solution's health (0..1) for the applied
	// blueprint bp, evaluated now, and what limits it; the rollback guard
	// (spec.rollback) judges a revision on trial with it. Called from the
	// Run goroutine only, after the pass that converged bp reported its
	// status. Without it only apply errors fail a trial.
	Health func(ctx context.Context, bp *blueprint.Blueprint) (solution float64, why string)
}

// Engine reconciles a node onto its blueprint.
type Engine struct {
	cfg   Config
	log   *slog.Logger
	store *store
	wake  chan struct{}

	mu      sync.Mutex
	pending *Candidate

	// Owned by the Run goroutine.
	target     *revision // what the node should run
	applied    *revision // what it last converged to
	invalid    []string
	desiredRev uint64
	repairs    uint64
	lastRepair time.Time
	backoff    time.Duration
	status     Status
	// The rollback guard (guard.go): the last-known-good revision, the
	// trial of the target, the refused revision, and whether the last
	// pass on the target converged without errors (trialErrs if not).
	good       *revision
	trial      *trial
	rolledBack *streams.RolledBack
	clean      bool
	trialErrs  []string
	// prepared is the hash of the last prepared blueprint that converged:
	// when only what Prepare resolves changes (new cloud outputs), the pass
	// is an update, not a drift repair.
	prepared string
}

type revision struct {
	Rev     uint64
	Data    []byte
	Deleted bool
	bp      *blueprint.Blueprint
	hash    string
}

// New builds an engine; Run starts it.
func New(cfg Config) (*Engine, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	st, err := openStore(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	return &Engine{cfg: cfg, log: cfg.Log, store: st, wake: make(chan struct{}, 1)}, nil
}

// Offer hands the engine a new revision. It never blocks; only the newest
// offer is kept.
func (e *Engine) Offer(c Candidate) {
	e.mu.Lock()
	e.pending = &c
	e.mu.Unlock()
	e.Trigger("offer")
}

// Trigger asks for a reconcile pass as soon as possible; reason is logged
// (debug), so a pass can be traced to what asked for it.
func (e *Engine) Trigger(reason string) {
	e.log.Debug("pass requested", "reason", reason)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done. A node that boots offline re-applies the
// revision it persisted last, without any server.
func (e *Engine) Run(ctx context.Context) error {
	if err := e.load(); err != nil {
		e.log.Error("loading persisted blueprint", "err", err)
	}
	for _, d := range e.cfg.Drivers {
		if w, ok := d.(driver.Watcher); ok {
			go func() {
				if err := w.Watch(ctx, e.Trigger); err != nil && ctx.Err() == nil {
					e.log.Warn("drift watch stopped", "driver", d.Name(), "err", err)
				}
			}()
		}
	}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := e.pass(ctx)
		if e.judge(ctx) {
			continue // the trial ended: report it, or converge back, now
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		if !e.wait(ctx, timer) {
			return nil
		}
	}
}

// wait blocks until the next pass is due; while a revision is on trial it
// judges the trial on a short ticker in between, without a full pass.
func (e *Engine) wait(ctx context.Context, timer *time.Timer) bool {
	var tick <-chan time.Time
	if e.onTrial() {
		t := time.NewTicker(trialTick(e.target.bp.Spec.Rollback))
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-e.wake:
			return true
		case <-timer.C:
			return true
		case <-tick:
			if e.judge(ctx) {
				return true
			}
		}
	}
}

func (e *Engine) load() error {
	g, guarded, err := e.store.loadGuard()
	if err != nil {
		return err
	}
	e.trial, e.rolledBack = g.Trial, g.RolledBack
	for _, name := range []string{"good", "applied", "desired"} {
		r, err := e.store.load(name)
		if err != nil {
			return err
		}
		if r == nil {
			continue
		}
		if err := r.parse(); err != nil {
			return fmt.Errorf("persisted %s revision %d: %w", name, r.Rev, err)
		}
		switch name {
		case "good":
			e.good = r
			continue
		case "applied":
			e.applied = r
		}
		e.target = r
		e.desiredRev = r.Rev
	}
	if e.good == nil && e.applied != nil && !guarded {
		// State from before the guard existed: what converged was good.
		// (With a guard file, an applied revision that is not good may
		// have failed or been cut short on trial.)
		e.markGood(e.applied)
	}
	if e.rolledBack != nil && e.rolledBack.Revision > e.desiredRev {
		e.desiredRev = e.rolledBack.Revision
	}
	return nil
}

func (r *revision) parse() error {
	if r.Deleted {
		r.bp = blueprint.Empty()
	} else {
		bp, err := blueprint.Parse(r.Data)
		if err != nil {
			return err
		}
		r.bp = bp
	}
	r.hash = r.bp.Hash()
	return nil
}

// take moves a pending offer into the target, or records why it was refused.
func (e *Engine) take() {
	e.mu.Lock()
	c := e.pending
	e.pending = nil
	e.mu.Unlock()
	if c == nil {
		return
	}
	if e.target != nil && c.Revision == e.target.Rev && c.Err == nil {
		// The target offered again (a re-watch): a refusal offered in
		// between (an older revision replayed while a site's mirror
		// catches up) no longer stands.
		e.desiredRev, e.invalid = c.Revision, nil
		return
	}
	if e.rolledBack != nil && c.Revision == e.rolledBack.Revision {
		// Refused by the rollback guard: never tried again, whether a
		// re-watch, the level check or a restart offers it.
		return
	}
	e.desiredRev = c.Revision
	if c.Err != nil {
		e.invalid = []string{c.Err.Error()}
		e.log.Warn("revision refused", "revision", c.Revision, "err", c.Err)
		return
	}
	r := &revision{Rev: c.Revision, Data: c.Data, Deleted: c.Deleted}
	if err := r.parse(); err != nil {
		var errs blueprint.Errors
		if errors.As(err, &errs) {
			e.invalid = errs.Strings()
		} else {
			e.invalid = []string{err.Error()}
		}
		e.log.Warn("revision invalid; keeping the last good one", "revision", c.Revision, "err", err)
		return
	}
	e.invalid = nil
	e.target = r
	if err := e.store.save("desired", r); err != nil {
		e.log.Error("persisting desired revision", "err", err)
	}
	if e.rolledBack != nil || e.trial != nil {
		// A newer revision: the refusal is history, and a trial of an
		// older one is moot.
		e.rolledBack, e.trial = nil, nil
		e.saveGuard()
	}
}

// pass runs one reconcile and returns how long to wait before the next.
func (e *Engine) pass(ctx context.Context) time.Duration {
	e.take()
	now := e.cfg.Now()
	st := Status{NodeStatus: streams.NodeStatus{DesiredRevision: e.desiredRev, Invalid: e.invalid, LastReconcile: now}}
	defer func() {
		st.Repairs, st.LastRepair = e.repairs, e.lastRepair
		if e.applied != nil {
			st.AppliedRevision = e.applied.Rev
			st.Applied = e.applied.bp
		}
		if st.Phase == PhaseConverged && len(e.invalid) > 0 {
			st.Phase = PhaseInvalid
			st.Message = fmt.Sprintf("revision %d refused; still running revision %d", e.desiredRev, st.AppliedRevision)
		}
		e.guardStatus(&st)
		e.status = st
		if e.cfg.OnStatus != nil {
			e.cfg.OnStatus(st)
		}
	}()
	if e.target == nil {
		st.Phase, st.Message = PhaseNone, "waiting for a blueprint"
		if len(e.invalid) > 0 {
			st.Phase, st.Message = PhaseInvalid, fmt.Sprintf("revision %d refused; no good revision yet", e.desiredRev)
		}
		return e.cfg.Resync
	}
	// Choose what to converge onto: the target, or the applied revision while
	// a gate holds updates back.
	run := e.target
	repair := e.applied != nil && e.applied.hash == e.target.hash
	recheck := throttle.Jitter(e.cfg.Resync, 10)
	if e.cfg.Gate != nil {
		var appliedBP *blueprint.Blueprint
		if e.applied != nil {
			appliedBP = e.applied.bp
		}
		d := e.cfg.Gate.Check(now, appliedBP, e.target.bp)
		st.Gate = d.Reason
		if d.Repair && e.rollingBack() {
			d.Update = true // a window does not keep a refused revision running; a hold does
		}
		if !d.Recheck.IsZero() && d.Recheck.Sub(now) < recheck {
			recheck = max(d.Recheck.Sub(now), 10*time.Millisecond)
		}
		switch {
		case !repair && !d.Update && d.Repair && e.applied != nil:
			// Stage the new revision; keep the applied one repaired meanwhile.
			run, repair = e.applied, true
			st.Phase, st.Message = PhaseStaged, d.Reason
		case !repair && !d.Update:
			st.Phase, st.Message, st.Blueprint = PhaseStaged, d.Reason, e.target.bp.Metadata.Name
			st.Resources = e.status.Resources // as last observed; nothing is touched now
			if !d.Repair {
				st.Phase = PhaseHeld
			}
			return recheck
		case repair && !d.Repair:
			st.Phase, st.Message, st.Blueprint = PhaseHeld, d.Reason, run.bp.Metadata.Name
			st.Resources = e.status.Resources
			return recheck
		}
	}
	st.Blueprint = run.bp.Metadata.Name
	if run == e.target {
		e.startTrial(run, now)
	}
	changed, errs := e.converge(ctx, run, repair, &st)
	st.Errors = errs
	if run == e.target {
		e.clean, e.trialErrs = len(errs) == 0, errs
	}
	switch {
	case len(errs) > 0:
		if st.Phase == "" {
			st.Phase = PhaseDegraded
		}
		st.Message = fmt.Sprintf("%d problem(s) converging revision %d", len(errs), run.Rev)
		e.backoff = min(max(2*e.backoff, time.Second), 5*time.Minute)
		return throttle.Jitter(e.backoff, 10)
	case run == e.target:
		e.backoff = 0
		if e.applied == nil || e.applied.Rev != run.Rev || e.applied.hash != run.hash {
			e.applied = run
			if err := e.store.save("applied", run); err != nil {
				e.log.Error("persisting applied revision", "err", err)
			}
		}
		if !e.needsTrial(run) {
			e.markGood(run)
		}
		if st.Phase == "" {
			st.Phase = PhaseConverged
			if run.Deleted {
				st.Phase = PhaseRemoved
			}
		}
	default:
		e.backoff = 0
		if st.Phase == "" {
			st.Phase = PhaseConverged
		}
	}
	if changed {
		// Verify at once: level-based, the next pass observes what we reached.
		return 0
	}
	return recheck
}

type step struct {
	driver string
	change driver.Change
}

// converge plans every driver and applies the changes in dependency order.
// A change whose dependency failed in this pass waits for the next one.
func (e *Engine) converge(ctx context.Context, run *revision, repair bool, st *Status) (changed bool, errs []string) {
	var steps []step
	health := map[string]driver.Resource{}
	bp := run.bp
	if e.cfg.Prepare != nil {
		prepared, err := e.cfg.Prepare(ctx, bp)
		if err != nil {
			return false, []string{"prepare: " + err.Error()}
		}
		bp = prepared
		h := bp.Hash()
		if h != e.prepared {
			repair = false
		}
		defer func() {
			if len(errs) == 0 {
				e.prepared = h
			}
		}()
	}
	for _, d := range e.cfg.Drivers {
		// A plan that comes with an error is still applied: one bad element
		// must not hold back the rest of its section.
		p, err := d.Plan(ctx, bp)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", d.Name(), err))
		}
		for _, c := range p {
			steps = append(steps, step{d.Name(), c})
		}
	}
	steps = order(steps, run.bp.Dependencies())
	failed := map[string]error{}
	deps := run.bp.Dependencies()
	for _, s := range steps {
		if ctx.Err() != nil {
			break
		}
		var err error
		for _, dep := range deps[s.change.ID] {
			if failed[dep] != nil {
				err = fmt.Errorf("waiting for %s", dep)
			}
		}
		if err == nil {
			err = s.change.Apply(ctx)
		}
		if err != nil {
			failed[s.change.ID] = err
			errs = append(errs, fmt.Sprintf("%s: %s: %v", s.driver, s.change.ID, err))
			health[s.change.ID] = driver.Resource{ID: s.change.ID, State: "failed", Message: err.Error()}
			e.log.Warn("change failed", "driver", s.driver, "change", s.change.String(), "err", err)
		} else {
			e.log.Info("applied", "driver", s.driver, "change", s.change.String(), "repair", repair)
		}
		if repair {
			if err == nil {
				e.repairs++
				e.lastRepair = e.cfg.Now()
			}
			if e.cfg.OnRepair != nil {
				e.cfg.OnRepair(Repair{Driver: s.driver, Change: s.change, Err: err, At: e.cfg.Now()})
			}
		}
	}
	for _, d := range e.cfg.Drivers {
		if r, ok := d.(driver.Reporter); ok {
			for _, res := range r.Report(ctx) {
				if _, bad := health[res.ID]; !bad {
					health[res.ID] = res
				}
			}
		}
	}
	for id := range deps {
		if _, ok := health[id]; !ok {
			health[id] = driver.Resource{ID: id, State: "ok", Health: 1}
		}
	}
	for _, r := range health {
		st.Resources = append(st.Resources, r)
	}
	sort.Slice(st.Resources, func(i, j int) bool { return st.Resources[i].ID < st.Resources[j].ID })
	return len(steps) > 0, errs
}

// order puts deletions first (their dependents are gone from the blueprint),
// then the rest so that every change comes after the changes it depends on;
// otherwise the drivers' own order is kept.
func order(steps []step, deps map[string][]string) []step {
	var out, rest []step
	for _, s := range steps {
		if s.change.Op == driver.Delete {
			out = append(out, s)
		} else {
			rest = append(rest, s)
		}
	}
	placed := map[int]bool{}
	inPlan := map[string]bool{}
	for _, s := range rest {
		inPlan[s.change.ID] = true
	}
	done := map[string]bool{}
	for len(placed) < len(rest) {
		progress := false
		for i, s := range rest {
			if placed[i] {
				continue
			}
			ready := true
			for _, d := range deps[s.change.ID] {
				if inPlan[d] && !done[d] {
					ready = false
				}
			}
			if !ready {
				continue
			}
			out = append(out, s)
			placed[i] = true
			progress = true
			// A resource is done when all of its changes are placed.
			done[s.change.ID] = true
			for j, o := range rest {
				if !placed[j] && o.change.ID == s.change.ID {
					done[s.change.ID] = false
				}
			}
		}
		if !progress { // a cycle validation should have caught; keep plan order
			for i, s := range rest {
				if !placed[i] {
					out = append(out, s)
					placed[i] = true
				}
			}
		}
	}
	return out
}

// Status returns the last pass's status. Only safe from OnStatus or after Run
// returned; others should use OnStatus.
func (e *Engine) Status() Status { return e.status }
