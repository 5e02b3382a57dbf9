// Package remediation acts on the node's signals by the blueprint's policies,
// with hysteresis, cooldown, exponential backoff and a budget, and escalates
// to an alert instead of flapping.
package remediation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// Actuator restarts or stops a workload by its resource id (container:web,
// unit:meter.service). The agent backs it with the podman and systemd drivers.
type Actuator interface {
	Restart(ctx context.Context, target string) error
	Stop(ctx context.Context, target string) error
}

// Hold suspends every action while it says so (an operator hold, a
// maintenance freeze). Decisions are still made and reported.
type Hold interface {
	Held(now time.Time) bool
}

// Defaults for a policy that leaves them out.
const (
	DefaultCooldown = time.Minute
	DefaultMaxWait  = time.Hour // cap of the exponential backoff
)

// DefaultBudget applies to a policy without a budget: 3 actions an hour.
var DefaultBudget = blueprint.Budget{Max: 3, Period: blueprint.Duration{Duration: time.Hour}}

// Decisions, the name suffix of each event (remediation.<decision>).
const (
	Fired     = "fired"     // the condition held long enough; an incident opens
	Acted     = "acted"     // the action ran (Text says whether it failed)
	Suspended = "suspended" // a hold kept the action from running
	Escalated = "escalated" // the budget is spent: alert, and act no more
	Cleared   = "cleared"   // the clear condition holds; the incident ends
)

// Config builds a Remediator.
type Config struct {
	Policies []blueprint.Remediation
	Actuator Actuator
	Hold     Hold // nil: never held
	// Emit receives each decision as an event (kind=event, layer remediation).
	Emit func(streams.Metric)
	Now  func() time.Time
	Log  *slog.Logger
	// Exec runs an exec action's command (default: os/exec with a 1 minute
	// timeout).
	Exec func(ctx context.Context, argv []string) error
	// MaxWait caps the backoff between actions (default 1h).
	MaxWait time.Duration
	// StateFile, if set, keeps each policy's actions, backoff and escalation
	// across agent restarts, so an agent that crashes along with the
	// workload it restarts cannot reset its own budget.
	StateFile string
}

// Remediator evaluates the policies each time signals are observed.
type Remediator struct {
	cfg Config
	mu  sync.Mutex
	st  map[string]*state
}

type state struct {
	Since     time.Time   `json:"since,omitzero"` // start of the current run of the condition; zero when false
	Active    bool        `json:"active"`         // an incident is open
	Escalated bool        `json:"escalated"`      // budget spent: no more actions until the period has room
	EscOpen   bool        `json:"escOpen"`        // the incident that escalated is still open
	Suspended bool        `json:"suspended"`      // a hold suspension was reported already
	Last      time.Time   `json:"last,omitzero"`  // last action
	Streak    int         `json:"streak"`         // actions in this incident, for backoff
	Actions   []time.Time `json:"actions"`        // actions inside the budget period
}

// New builds a remediator for a blueprint's policies.
func New(cfg Config) *Remediator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Emit == nil {
		cfg.Emit = func(streams.Metric) {}
	}
	if cfg.Exec == nil {
		cfg.Exec = runCommand
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = DefaultMaxWait
	}
	r := &Remediator{cfg: cfg, st: map[string]*state{}}
	if cfg.StateFile != "" {
		if data, err := os.ReadFile(cfg.StateFile); err == nil {
			if err := json.Unmarshal(data, &r.st); err != nil {
				cfg.Log.Warn("remediation state unreadable; starting afresh", "file", cfg.StateFile, "err", err)
				r.st = map[string]*state{}
			}
		}
	}
	return r
}

// save writes the policies' state durably (a crash leaves the old or the new
// state, never half of one).
func (r *Remediator) save() {
	if r.cfg.StateFile == "" {
		return
	}
	data, _ := json.Marshal(r.st)
	if err := fileio.WriteFile(r.cfg.StateFile, data, 0o600); err != nil {
		r.cfg.Log.Warn("remediation state not saved", "file", r.cfg.StateFile, "err", err)
	}
}

// Actions returns how many actions each policy took (budget window only).
func (r *Remediator) Actions(policy string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.st[policy]; s != nil {
		return len(s.Actions)
	}
	return 0
}

// Observe evaluates every policy against the latest signals at the
// remediator's clock. A policy whose signal is missing keeps its state: no
// reading is not evidence of anything.
func (r *Remediator) Observe(ctx context.Context, signals map[string]float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	for _, p := range r.cfg.Policies {
		v, ok := signals[p.When.Signal]
		if !ok {
			continue
		}
		s := r.st[p.Name]
		if s == nil {
			s = &state{}
			r.st[p.Name] = s
		}
		if r.step(ctx, p, s, v, now) {
			r.save()
		}
	}
}

// step advances one policy; it reports whether a decision was made (and
// the state is worth saving).
func (r *Remediator) step(ctx context.Context, p blueprint.Remediation, s *state, v float64, now time.Time) (decided bool) {
	cond := holds(p.When, v)
	if s.Active && r.cleared(p, v) {
		r.emit(p, Cleared, 0, fmt.Sprintf("%s %.4g: %s; incident over after %d action(s)", p.When.Signal, v, clearText(p), s.Streak))
		decided = true
		s.Active, s.Suspended, s.EscOpen, s.Streak = false, false, false, 0
	}
	if !cond {
		s.Since = time.Time{}
		return
	}
	if s.Since.IsZero() {
		s.Since = now
	}
	// The condition must hold for its duration, counted again after each
	// action, so the action gets that long to show its effect.
	from := s.Since
	if s.Active && s.Last.After(from) {
		from = s.Last
	}
	if now.Sub(from) < p.When.For.Duration {
		return
	}
	why := fmt.Sprintf("%s %.4g %s for %s", p.When.Signal, v, condText(p.When), now.Sub(s.Since).Round(time.Second))
	if !s.Active {
		s.Active = true
		r.emit(p, Fired, 0, why)
		decided = true
	}
	b := DefaultBudget
	if p.Budget != nil {
		b = *p.Budget
	}
	kept := s.Actions[:0]
	for _, t := range s.Actions {
		if now.Sub(t) < b.Period.Duration {
			kept = append(kept, t)
		}
	}
	s.Actions = kept
	if s.Escalated {
		// An escalated policy stops acting for the rest of the incident
		// (someone has to look), and across incidents that open and close
		// (a flapping signal) until the budget period has room again.
		if s.EscOpen || len(s.Actions) >= b.Max {
			return
		}
		s.Escalated = false
	}
	if r.cfg.Hold != nil && r.cfg.Hold.Held(now) {
		if !s.Suspended {
			s.Suspended = true
			r.emit(p, Suspended, 0, why+"; held: "+p.Action.Type+" suspended")
			decided = true
		}
		return
	}
	s.Suspended = false
	// Cooldown after any action, also one of an earlier incident, doubled
	// after each action of this incident.
	if !s.Last.IsZero() && now.Before(s.Last.Add(r.wait(p, max(s.Streak, 1)))) {
		return
	}
	if len(s.Actions) >= b.Max {
		s.Escalated, s.EscOpen = true, true
		r.emit(p, Escalated, float64(len(s.Actions)), fmt.Sprintf("%s; budget of %d per %s spent: alert, no further %s in this incident",
			why, b.Max, b.Period.Duration, p.Action.Type))
		decided = true
		return
	}
	s.Actions = append(s.Actions, now)
	s.Last = now
	s.Streak++
	err := r.act(ctx, p)
	text := fmt.Sprintf("%s; %s (action %d of %d per %s)", why, actionText(p.Action), len(s.Actions), b.Max, b.Period.Duration)
	if err != nil {
		text += ": failed: " + err.Error()
	}
	r.emit(p, Acted, float64(len(s.Actions)), text)
	return true
}

// wait is the cooldown after the n-th action of an incident: cooldown,
// then doubling, capped at MaxWait.
func (r *Remediator) wait(p blueprint.Remediation, n int) time.Duration {
	d := p.Cooldown.Duration
	if d <= 0 {
		d = DefaultCooldown
	}
	for i := 1; i < n && d < r.cfg.MaxWait; i++ {
		d *= 2
	}
	return min(d, r.cfg.MaxWait)
}

func (r *Remediator) cleared(p blueprint.Remediation, v float64) bool {
	if p.Clear != nil {
		return holds(*p.Clear, v)
	}
	return !holds(p.When, v)
}

func (r *Remediator) act(ctx context.Context, p blueprint.Remediation) error {
	switch p.Action.Type {
	case "alert":
		return nil // the event is the alert
	case "restart", "stop":
		if r.cfg.Actuator == nil {
			return errors.New("no actuator for workloads on this node")
		}
		if p.Action.Type == "restart" {
			return r.cfg.Actuator.Restart(ctx, p.Action.Target)
		}
		return r.cfg.Actuator.Stop(ctx, p.Action.Target)
	case "exec":
		return r.cfg.Exec(ctx, p.Action.Command)
	}
	return fmt.Errorf("action type %q is not one of alert, restart, stop, exec", p.Action.Type)
}

func (r *Remediator) emit(p blueprint.Remediation, decision string, n float64, text string) {
	r.cfg.Log.Info("remediation "+decision, "policy", p.Name, "reason", text)
	lab := map[string]string{"policy": p.Name, "action": p.Action.Type}
	if p.Action.Target != "" {
		lab["target"] = p.Action.Target
	}
	r.cfg.Emit(streams.Metric{Name: "remediation." + decision, Value: n, TS: r.cfg.Now().UTC(), Layer: "remediation",
		Kind: streams.KindEvent, Labels: lab, Text: text})
}

func holds(c blueprint.Condition, v float64) bool {
	switch {
	case c.Above != nil:
		return v > *c.Above
	case c.Below != nil:
		return v < *c.Below
	}
	return false
}

func condText(c blueprint.Condition) string {
	if c.Above != nil {
		return fmt.Sprintf("above %.4g", *c.Above)
	}
	if c.Below != nil {
		return fmt.Sprintf("below %.4g", *c.Below)
	}
	return "?"
}

func clearText(p blueprint.Remediation) string {
	if p.Clear != nil {
		return condText(*p.Clear)
	}
	return "no longer " + condText(p.When)
}

func actionText(a blueprint.RemedyAction) string {
	switch a.Type {
	case "exec":
		return "exec " + strings.Join(a.Command, " ")
	case "alert":
		return "alert"
	}
	return a.Type + " " + a.Target
}

func runCommand(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(string(out)))
	}
	return nil
}
