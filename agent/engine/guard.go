package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// The rollback guard (blueprint spec.rollback). A revision is good once it
// converged without errors and, if it has spec.rollback, the solution's
// health stayed at or above minHealth for `for`; without spec.rollback it is
// good as soon as it converges. A revision with spec.rollback that is not
// the last-known-good one is on trial from the first pass that works on it
// (not while a gate stages it); if it is not good by its deadline, the
// engine returns to the last-known-good revision on its own and refuses the
// revision from then on. All of it lives in the Run goroutine and on disk:
// no server is needed to decide or to roll back.

// trial is the clock of a revision on trial.
type trial struct {
	Revision uint64    `json:"revision"`
	Started  time.Time `json:"started"`

	// Not persisted: after a restart, health has to hold for the whole
	// period again.
	healthySince   time.Time
	unhealthySince time.Time
}

// onTrial reports whether the target is on trial now.
func (e *Engine) onTrial() bool {
	return e.trial != nil && e.target != nil && e.trial.Revision == e.target.Rev
}

// needsTrial reports whether r must prove itself before it counts as good.
func (e *Engine) needsTrial(r *revision) bool {
	return r.bp.Spec.Rollback != nil && (e.good == nil || e.good.Rev != r.Rev)
}

// startTrial starts r's clock when the engine first works on it.
func (e *Engine) startTrial(r *revision, now time.Time) {
	if !e.needsTrial(r) || (e.trial != nil && e.trial.Revision == r.Rev) {
		return
	}
	e.trial = &trial{Revision: r.Rev, Started: now}
	e.log.Info("revision on trial", "revision", r.Rev, "deadline", r.bp.Spec.Rollback.Deadline.Duration,
		"minHealth", r.bp.Spec.Rollback.MinHealth, "for", r.bp.Spec.Rollback.For.Duration)
	e.saveGuard()
}

// trialTick is how often a trial is judged between passes: often enough for
// the period and the deadline to be honoured closely, cheap enough to run
// beside the workload (one health evaluation, no plan).
func trialTick(rb *blueprint.Rollback) time.Duration {
	base := rb.For.Duration
	if base <= 0 {
		base = rb.Deadline.Duration
	}
	return min(max(base/10, 100*time.Millisecond), time.Second)
}

// judge decides a running trial: good once health held for its period,
// rolled back once the deadline passed first. It reports whether the trial
// ended, so a pass follows at once (to report, and to converge back).
func (e *Engine) judge(ctx context.Context) bool {
	if !e.onTrial() {
		return false
	}
	t, rb := e.trial, e.target.bp.Spec.Rollback
	now := e.cfg.Now()
	converged := e.clean && e.applied != nil && e.applied.Rev == e.target.Rev
	h, why := 1.0, ""
	if converged {
		if e.cfg.Health != nil {
			h, why = e.cfg.Health(ctx, e.applied.bp)
		}
		if h >= rb.MinHealth {
			t.unhealthySince = time.Time{}
			if t.healthySince.IsZero() {
				t.healthySince = now
			}
			if now.Sub(t.healthySince) >= rb.For.Duration {
				e.log.Info("revision good", "revision", e.target.Rev, "health", h)
				e.markGood(e.target)
				return true
			}
		} else {
			t.healthySince = time.Time{}
			if t.unhealthySince.IsZero() {
				t.unhealthySince = now
			}
		}
	} else {
		t.healthySince = time.Time{}
	}
	if now.Sub(t.Started) < rb.Deadline.Duration {
		return false
	}
	var reason string
	switch {
	case !converged && len(e.trialErrs) > 0:
		reason = e.trialErrs[0]
		if n := len(e.trialErrs) - 1; n > 0 {
			reason += fmt.Sprintf(" (and %d more)", n)
		}
	case !converged:
		reason = fmt.Sprintf("not converged within %s", rb.Deadline.Duration)
	case h < rb.MinHealth:
		reason = fmt.Sprintf("health %.2f < %.2f for %s", h, rb.MinHealth, now.Sub(t.unhealthySince).Round(time.Second))
		if why != "" {
			reason += ": " + why
		}
	default:
		reason = fmt.Sprintf("health %.2f held only %s of %s by the deadline %s", h, now.Sub(t.healthySince).Round(time.Second),
			rb.For.Duration, rb.Deadline.Duration)
	}
	e.rollBack(reason, now)
	return true
}

// markGood records r as the last-known-good revision.
func (e *Engine) markGood(r *revision) {
	if r.Rev == 0 { // the empty blueprint of a rollback with nowhere to go
		return
	}
	if e.good == nil || e.good.Rev != r.Rev || e.good.hash != r.hash {
		e.good = r
		if err := e.store.save("good", r); err != nil {
			e.log.Error("persisting last-known-good revision", "err", err)
		}
	}
	if e.trial != nil {
		e.trial = nil
		e.saveGuard()
	}
}

// rollBack refuses the target and makes the last-known-good revision the
// target again; with none, the node converges to the empty blueprint.
func (e *Engine) rollBack(reason string, now time.Time) {
	bad := e.target
	to := e.good
	if to == nil {
		to = &revision{Rev: 0, Deleted: true}
		_ = to.parse() // the empty blueprint always parses
	}
	e.rolledBack = &streams.RolledBack{Revision: bad.Rev, To: to.Rev, Reason: reason, At: now.UTC()}
	e.log.Warn("rolling back", "revision", bad.Rev, "to", to.Rev, "reason", reason)
	e.trial, e.trialErrs, e.backoff = nil, nil, 0
	e.target = to
	if err := e.store.save("desired", to); err != nil {
		e.log.Error("persisting desired revision", "err", err)
	}
	e.saveGuard()
}

// rollingBack reports whether the engine is on its way back to the
// last-known-good revision: such a pass is not held back by a maintenance
// window (the trial began inside one), only by an operator's hold.
func (e *Engine) rollingBack() bool {
	return e.rolledBack != nil && e.target != nil && e.target.Rev == e.rolledBack.To
}

func (e *Engine) saveGuard() {
	if err := e.store.saveGuard(guardState{Trial: e.trial, RolledBack: e.rolledBack}); err != nil {
		e.log.Error("persisting rollback guard", "err", err)
	}
}

// guardStatus writes the guard's part of the status.
func (e *Engine) guardStatus(st *Status) {
	if e.good != nil {
		st.GoodRevision = e.good.Rev
	}
	if rb := e.rolledBack; rb != nil {
		r := *rb
		st.RolledBack = &r
		if st.Phase == PhaseConverged || st.Phase == PhaseRemoved {
			st.Phase = PhaseRolledBack
			st.Message = fmt.Sprintf("revision %d rolled back to %d: %s", rb.Revision, rb.To, rb.Reason)
		}
		return
	}
	if e.onTrial() && st.Phase == PhaseConverged {
		rb := e.target.bp.Spec.Rollback
		left := max(e.trial.Started.Add(rb.Deadline.Duration).Sub(st.LastReconcile), 0).Round(time.Second)
		st.Message = fmt.Sprintf("revision %d on trial: health must hold %.2f for %s (deadline in %s)",
			e.target.Rev, rb.MinHealth, rb.For.Duration, left)
	}
}
