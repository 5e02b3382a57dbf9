package remediation_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/health"
	"github.com/alpha-edge/alpha/agent/remediation"
	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func f(v float64) *float64 { return &v }

func dur(d time.Duration) blueprint.Duration { return blueprint.Duration{Duration: d} }

// clock is the injected time: tests step it, nothing sleeps.
type clock struct{ t time.Time }

func (c *clock) now() time.Time            { return c.t }
func (c *clock) step(d time.Duration)      { c.t = c.t.Add(d) }
func newClock() *clock                     { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *clock) since(t0 time.Time) string { return c.t.Sub(t0).String() }

// processes restarts a real process the test started: Restart kills it by
// its PID and starts a new one, so the test can see the PID change.
type processes struct {
	mu       sync.Mutex
	cmd      *exec.Cmd
	restarts []string
	stops    []string
}

func (p *processes) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command("sleep", "3600")
	check.NoError(t, p.cmd.Start())
}

func (p *processes) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

func (p *processes) Restart(ctx context.Context, target string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.restarts = append(p.restarts, target)
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	_ = p.cmd.Wait()
	p.cmd = exec.CommandContext(context.WithoutCancel(ctx), "sleep", "3600")
	return p.cmd.Start()
}

func (p *processes) Stop(ctx context.Context, target string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stops = append(p.stops, target)
	return nil
}

func (p *processes) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}

type events struct {
	mu  sync.Mutex
	all []streams.Metric
}

func (e *events) emit(m streams.Metric) {
	e.mu.Lock()
	e.all = append(e.all, m)
	e.mu.Unlock()
}

func (e *events) count(decision string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, m := range e.all {
		if m.Name == "remediation."+decision {
			n++
		}
	}
	return n
}

// writeTemp sets the fake hwmon sensor "cpu" to celsius.
func writeTemp(t *testing.T, sys string, celsius float64) {
	t.Helper()
	check.NoError(t, os.WriteFile(filepath.Join(sys, "class/hwmon/hwmon0/temp1_input"), []byte(fmt.Sprintf("%d\n", int(celsius*1000))), 0o644))
}

// TestSensorRemediationNoFlapping reads temperatures through gopsutil from a
// fake sysfs tree (HOST_SYS): the temperature rises past its range, health
// drops, the workload (a real process) is restarted once; then the
// temperature oscillates around the threshold for an hour and nothing more
// happens; it cools down below the clear threshold and the incident ends.
func TestSensorRemediationNoFlapping(t *testing.T) {
	sys := t.TempDir()
	check.NoError(t, os.MkdirAll(filepath.Join(sys, "class/hwmon/hwmon0"), 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(sys, "class/hwmon/hwmon0/name"), []byte("cpu\n"), 0o644))
	t.Setenv("HOST_SYS", sys)
	writeTemp(t, sys, 60)

	bp := &blueprint.Blueprint{Spec: blueprint.Spec{
		Containers: []blueprint.Container{{Name: "web"}},
		Telemetry:  &blueprint.Telemetry{Sensors: []blueprint.Sensor{{Name: "temperature.cpu", Max: f(85)}}},
		Health:     &blueprint.Health{DependsOn: []string{"container:web", "sensor:temperature.cpu"}},
		Remediation: []blueprint.Remediation{{
			Name:     "cpu-hot",
			When:     blueprint.Condition{Signal: "temperature.cpu", Above: f(85), For: dur(60 * time.Second)},
			Clear:    &blueprint.Condition{Below: f(75)},
			Action:   blueprint.RemedyAction{Type: "restart", Target: "container:web"},
			Cooldown: dur(5 * time.Minute),
			Budget:   &blueprint.Budget{Max: 3, Period: dur(time.Hour)},
		}},
	}}
	proc := &processes{}
	proc.start(t)
	t.Cleanup(proc.kill)
	clk := newClock()
	ev := &events{}
	rem := remediation.New(remediation.Config{Policies: bp.Spec.Remediation, Actuator: proc, Emit: ev.emit, Now: clk.now})
	var tracker health.Tracker
	var healthChanges []streams.Metric
	ctx := context.Background()

	// One pass of what the agent does each sample.
	pass := func(celsius float64) health.Report {
		t.Helper()
		writeTemp(t, sys, celsius)
		ms, err := telemetry.Collect(ctx, telemetry.Sensors{})
		check.NoError(t, err)
		signals := map[string]float64{}
		for _, m := range ms {
			signals[m.Name] = m.Value
		}
		if got := signals["temperature.cpu"]; got != celsius {
			t.Fatalf("gopsutil read temperature.cpu %v from the fake sysfs, want %v (samples %+v)", got, celsius, ms)
		}
		rep := health.Evaluate(bp, health.Input{Resources: []driver.Resource{{ID: "container:web", State: "running", Health: 1}}, Signals: signals})
		healthChanges = append(healthChanges, tracker.Changes(rep)...)
		for k, v := range rep.Signals() {
			signals[k] = v
		}
		rem.Observe(ctx, signals)
		clk.step(5 * time.Second)
		return rep
	}

	for range 24 { // two cool minutes
		if rep := pass(60); rep.Solution != 1 {
			t.Fatalf("solution health %v at 60°C, want 1", rep.Solution)
		}
	}
	check.Equal(t, len(proc.restarts), 0)
	pid0 := proc.pid()

	t0 := clk.t
	rep := pass(90)
	check.Equal(t, rep.Solution, 0.0)
	if len(rep.Limiting) != 1 || rep.Limiting[0] != "sensor:temperature.cpu" {
		t.Fatalf("limiting %v, want the sensor", rep.Limiting)
	}
	for len(proc.restarts) == 0 {
		if clk.t.Sub(t0) > 2*time.Minute {
			t.Fatal("no restart after 2 minutes above the range")
		}
		pass(90)
	}
	if d := clk.t.Sub(t0); d < 60*time.Second || d > 70*time.Second {
		t.Fatalf("restart after %v above 85°C, want just after the policy's 60s", d)
	}
	if proc.pid() == pid0 {
		t.Fatal("the process was not really restarted: same PID")
	}
	// An hour of oscillation around 85°C: above, below, above, never below
	// the 75°C clear threshold and never above for a full minute.
	for i := range 720 {
		pass(84 + 2*float64(i%2))
	}
	check.Equal(t, len(proc.restarts), 1)
	check.Equal(t, ev.count(remediation.Acted), 1)
	check.Equal(t, ev.count(remediation.Cleared), 0)

	if rep := pass(70); rep.Solution != 1 {
		t.Fatalf("solution health %v back at 70°C, want 1", rep.Solution)
	}
	check.Equal(t, ev.count(remediation.Cleared), 1)
	check.Equal(t, len(proc.restarts), 1)

	// Health telemetry: one change per transition, not one per sample.
	var solution []float64
	for _, m := range healthChanges {
		check.Equal(t, m.Kind, streams.KindHealth)
		if m.Labels["id"] == health.SolutionID {
			solution = append(solution, m.Value)
		}
	}
	// 1 (start), 0 (hot), 1 (84°C is in range), then 0/1 for every swing
	// of the oscillation: health follows the sensor; remediation does not.
	if len(solution) < 3 || solution[0] != 1 || solution[1] != 0 || solution[len(solution)-1] != 1 {
		t.Fatalf("solution health changes %v", solution)
	}
}

// TestBackoffBudgetEscalation keeps the condition true for two hours: actions
// come after the cooldown, then after doubling waits, until the budget is
// spent; then one escalation alert and no more actions.
func TestBackoffBudgetEscalation(t *testing.T) {
	clk := newClock()
	ev := &events{}
	var acted []string
	p := blueprint.Remediation{
		Name:     "mem",
		When:     blueprint.Condition{Signal: "memory.percent", Above: f(90)},
		Action:   blueprint.RemedyAction{Type: "exec", Command: []string{"true"}},
		Cooldown: dur(time.Minute),
		Budget:   &blueprint.Budget{Max: 3, Period: dur(time.Hour)},
	}
	t0 := clk.t
	rem := remediation.New(remediation.Config{Policies: []blueprint.Remediation{p}, Emit: ev.emit, Now: clk.now,
		Exec: func(ctx context.Context, argv []string) error {
			acted = append(acted, clk.since(t0))
			return exec.CommandContext(ctx, argv[0]).Run()
		}})
	for range 720 { // 2 h at 10 s
		rem.Observe(context.Background(), map[string]float64{"memory.percent": 95})
		clk.step(10 * time.Second)
	}
	check.Equal(t, strings.Join(acted, " "), "0s 1m0s 3m0s")
	check.Equal(t, ev.count(remediation.Escalated), 1)
	check.Equal(t, ev.count(remediation.Fired), 1)
	for _, m := range ev.all {
		if m.Name == "remediation.escalated" && !strings.Contains(m.Text, "budget of 3 per 1h0m0s spent: alert, no further exec in this incident") {
			t.Fatalf("escalation reason %q", m.Text)
		}
		check.Equal(t, m.Kind, streams.KindEvent)
	}
}

type hold struct{ until time.Time }

func (h hold) Held(now time.Time) bool { return now.Before(h.until) }

// TestHoldSuspends: while held, the policy reports once that its action is
// suspended and does nothing; when the hold ends it acts.
func TestHoldSuspends(t *testing.T) {
	clk := newClock()
	ev := &events{}
	proc := &processes{}
	proc.start(t)
	t.Cleanup(proc.kill)
	p := blueprint.Remediation{
		Name:   "web-down",
		When:   blueprint.Condition{Signal: "health.container:web", Below: f(0.5), For: dur(30 * time.Second)},
		Action: blueprint.RemedyAction{Type: "stop", Target: "container:web"},
	}
	rem := remediation.New(remediation.Config{Policies: []blueprint.Remediation{p}, Actuator: proc, Emit: ev.emit,
		Now: clk.now, Hold: hold{until: clk.t.Add(10 * time.Minute)}})
	for range 60 { // 10 min held
		rem.Observe(context.Background(), map[string]float64{"health.container:web": 0})
		clk.step(10 * time.Second)
	}
	check.Equal(t, len(proc.stops), 0)
	check.Equal(t, ev.count(remediation.Suspended), 1)
	rem.Observe(context.Background(), map[string]float64{"health.container:web": 0})
	check.Equal(t, len(proc.stops), 1)
	check.Equal(t, proc.stops[0], "container:web")
}

// TestWithoutHysteresisOscillationStillBounded: with no clear threshold and
// no duration, a signal swinging across the threshold every sample opens and
// closes incidents, yet the budget bounds the actions and escalates.
func TestWithoutHysteresisOscillationStillBounded(t *testing.T) {
	clk := newClock()
	ev := &events{}
	n := 0
	p := blueprint.Remediation{
		Name:   "flappy",
		When:   blueprint.Condition{Signal: "x", Above: f(10)},
		Action: blueprint.RemedyAction{Type: "exec", Command: []string{"x"}},
		Budget: &blueprint.Budget{Max: 2, Period: dur(time.Hour)},
	}
	rem := remediation.New(remediation.Config{Policies: []blueprint.Remediation{p}, Emit: ev.emit, Now: clk.now,
		Exec: func(context.Context, []string) error { n++; return nil }})
	for i := range 360 { // 1 h at 10 s
		rem.Observe(context.Background(), map[string]float64{"x": 9 + 2*float64(i%2)})
		clk.step(10 * time.Second)
	}
	check.Equal(t, n, 2)
	check.Equal(t, ev.count(remediation.Escalated), 1)
}

// TestStateSurvivesRestart: an agent restarted in the middle of an incident
// (perhaps killed along with the workload) keeps its budget and backoff.
func TestStateSurvivesRestart(t *testing.T) {
	clk := newClock()
	file := filepath.Join(t.TempDir(), "remediation.json")
	n := 0
	p := blueprint.Remediation{
		Name:     "mem",
		When:     blueprint.Condition{Signal: "m", Above: f(90)},
		Action:   blueprint.RemedyAction{Type: "exec", Command: []string{"x"}},
		Cooldown: dur(time.Minute),
		Budget:   &blueprint.Budget{Max: 2, Period: dur(time.Hour)},
	}
	build := func() *remediation.Remediator {
		return remediation.New(remediation.Config{Policies: []blueprint.Remediation{p}, Now: clk.now, StateFile: file,
			Exec: func(context.Context, []string) error { n++; return nil }})
	}
	r := build()
	for range 9 { // 90 s: acts at 0 and 60 s
		r.Observe(context.Background(), map[string]float64{"m": 95})
		clk.step(10 * time.Second)
	}
	check.Equal(t, n, 2)
	for range 3 { // three restarts, an hour of high signal
		r = build()
		check.Equal(t, r.Actions("mem"), 2)
		for range 120 {
			r.Observe(context.Background(), map[string]float64{"m": 95})
			clk.step(10 * time.Second)
		}
	}
	check.Equal(t, n, 2)
}
