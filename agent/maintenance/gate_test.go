package maintenance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// clock is the injected time: tests move it, never sleep.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func at(s string) time.Time              { t, _ := time.Parse(time.RFC3339, s); return t }
func bp(m *blueprint.Maintenance) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "m"
	b.Spec.Maintenance = m
	return b
}

// Saturdays 02:00-04:00 and a Sunday night window across midnight, Berlin time.
var weekly = &blueprint.Maintenance{TimeZone: "Europe/Berlin", Windows: []blueprint.Window{
	{Days: []string{"sat"}, Start: "02:00", End: "04:00"},
	{Days: []string{"sun"}, Start: "23:00", End: "01:00"},
}}

func TestOpen(t *testing.T) {
	for _, c := range []struct {
		now    string
		open   bool
		change string
	}{
		{"2026-11-25T12:00:00Z", false, "2026-11-28T01:00:00Z"}, // Wed -> Sat 02:00 CET
		{"2026-11-28T01:30:00Z", true, "2026-11-28T03:00:00Z"},  // Sat 02:30 CET, ends 04:00
		{"2026-11-28T03:00:00Z", false, "2026-11-29T22:00:00Z"}, // end is exclusive
		{"2026-11-29T23:30:00Z", true, "2026-11-30T00:00:00Z"},  // Mon 00:30 CET: Sunday's window
	} {
		open, change, err := Open(weekly, at(c.now))
		check.NoError(t, err)
		if open != c.open || !change.Equal(at(c.change)) {
			t.Errorf("%s: open %v change %v, want %v %s", c.now, open, change.UTC(), c.open, c.change)
		}
	}
	open, change, err := Open(nil, at("2026-11-25T12:00:00Z"))
	check.NoError(t, err)
	if !open || !change.IsZero() {
		t.Fatal("no windows must mean always open")
	}
}

func TestCheck(t *testing.T) {
	g := &Gate{}
	now := at("2026-11-25T12:00:00Z")
	applied, target := bp(weekly), bp(weekly)
	target.Metadata.Name = "m2"

	d := g.Check(now, nil, target)
	if !d.Update || !d.Repair {
		t.Fatalf("a first blueprint applies at once: %+v", d)
	}
	d = g.Check(now, applied, target)
	if d.Update || !d.Repair || !d.Recheck.Equal(at("2026-11-28T01:00:00Z")) || !strings.Contains(d.Reason, "outside maintenance window") {
		t.Fatalf("outside a window the change is staged until it opens: %+v", d)
	}
	target.Metadata.Urgent = true
	if d = g.Check(now, applied, target); !d.Update {
		t.Fatalf("urgent changes apply outside windows: %+v", d)
	}

	h, err := NewHold("s1", "n1", now, 2*time.Hour, "debugging", "ops", nil)
	check.NoError(t, err)
	g.Holds = &Holds{hold: &h}
	d = g.Check(now, applied, target)
	if d.Update || d.Repair || !d.Recheck.Equal(now.Add(2*time.Hour)) || !strings.Contains(d.Reason, "debugging") {
		t.Fatalf("a hold stops updates and repairs until it ends: %+v", d)
	}
	if d = g.Check(now.Add(2*time.Hour), applied, target); !d.Update || !d.Repair {
		t.Fatalf("a hold ends on time: %+v", d)
	}

	_, err = NewHold("s1", "n1", now, MaxHold+time.Minute, "", "", nil)
	if err == nil || !strings.Contains(err.Error(), "--for") {
		t.Fatalf("a hold beyond the maximum must be refused, got %v", err)
	}
	// Even written by hand with a far Until, a hold ends after MaxHold.
	forever := Hold{Created: now, Until: now.Add(100 * 365 * 24 * time.Hour)}
	check.Equal(t, forever.Expiry(), now.Add(MaxHold))
}

// harness runs the real engine with the real files driver behind the gate.
type harness struct {
	eng    *engine.Engine
	root   string
	clock  *fakeClock
	mu     sync.Mutex
	st     engine.Status
	passes int
}

// pass triggers a reconcile and waits until the engine finished one, so a
// check that nothing changed is not vacuous.
func (h *harness) pass(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	n := h.passes
	h.mu.Unlock()
	h.eng.Trigger("test")
	check.For(t, 5*time.Second, 2*time.Millisecond, func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.passes <= n {
			return fmt.Errorf("no reconcile pass yet")
		}
		return nil
	})
}

func start(t *testing.T, g *Gate, c *fakeClock, wrap bool) *harness {
	t.Helper()
	root := t.TempDir()
	fd, err := files.New(driver.Env{Root: root, StateDir: t.TempDir()})
	check.NoError(t, err)
	var d driver.Driver = fd
	if wrap {
		d = Filter(fd, g, c.Now)
	}
	h := &harness{root: root, clock: c}
	h.eng, err = engine.New(engine.Config{
		Drivers: []driver.Driver{d}, StateDir: t.TempDir(), Gate: g, Now: c.Now, Resync: time.Hour,
		OnStatus: func(s engine.Status) { h.mu.Lock(); h.st = s; h.passes++; h.mu.Unlock() },
	})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return h
}

func (h *harness) status() engine.Status { h.mu.Lock(); defer h.mu.Unlock(); return h.st }

func (h *harness) write(t *testing.T, name, content string) {
	t.Helper()
	check.NoError(t, os.WriteFile(filepath.Join(h.root, "etc", name), []byte(content), 0o644))
}

func (h *harness) wait(t *testing.T, name, want string) {
	t.Helper()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		b, _ := os.ReadFile(filepath.Join(h.root, "etc", name))
		if string(b) != want {
			return fmt.Errorf("%s is %q, want %q", name, b, want)
		}
		return nil
	})
}

func (h *harness) waitPhase(t *testing.T, p engine.Phase) {
	t.Helper()
	check.For(t, 5*time.Second, 5*time.Millisecond, func() error {
		if st := h.status(); st.Phase != p {
			return fmt.Errorf("phase %s (%s), want %s", st.Phase, st.Message, p)
		}
		return nil
	})
}

func doc(rev string, urgent bool, windows string) []byte {
	s := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: " + rev + fmt.Sprintf(", urgent: %v}\n", urgent) +
		"spec:\n  files:\n    - {path: /etc/a.conf, content: " + rev + "}\n    - {path: /etc/b.conf, content: " + rev + "}\n"
	if windows != "" {
		s += "  maintenance:\n    timeZone: Europe/Berlin\n    windows:\n" + windows
	}
	return []byte(s)
}

const satWindow = "      - {days: [sat], start: \"02:00\", end: \"04:00\"}\n"

func TestWindowStagesChangeUntilItOpens(t *testing.T) {
	c := &fakeClock{t: at("2026-11-25T12:00:00Z")} // a Wednesday
	h := start(t, &Gate{}, c, false)
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("r1", false, satWindow)})
	h.wait(t, "a.conf", "r1") // the first blueprint applies at once
	h.waitPhase(t, engine.PhaseConverged)

	h.eng.Offer(engine.Candidate{Revision: 2, Data: doc("r2", false, satWindow)})
	h.waitPhase(t, engine.PhaseStaged)
	h.wait(t, "a.conf", "r1")
	// Drift of the running revision is still repaired while r2 waits.
	h.write(t, "a.conf", "by hand")
	h.eng.Trigger("test")
	h.wait(t, "a.conf", "r1")
	check.Equal(t, h.status().AppliedRevision, uint64(1))

	c.Set(at("2026-11-28T00:59:59Z")) // 01:59:59 in Berlin: not yet
	h.pass(t)
	h.waitPhase(t, engine.PhaseStaged)
	h.wait(t, "a.conf", "r1")

	c.Set(at("2026-11-28T01:00:00Z")) // the window opens
	h.eng.Trigger("test")
	h.wait(t, "a.conf", "r2")
	h.waitPhase(t, engine.PhaseConverged)

	// Urgent revisions do not wait.
	c.Set(at("2026-11-28T05:00:00Z"))
	h.eng.Offer(engine.Candidate{Revision: 3, Data: doc("r3", true, satWindow)})
	h.wait(t, "a.conf", "r3")
}

func TestHoldStopsRepairAndUpdatesAndEndsOnTime(t *testing.T) {
	c := &fakeClock{t: at("2026-11-25T12:00:00Z")}
	holds := &Holds{}
	h := start(t, &Gate{Holds: holds}, c, false)
	holds.onChange = func() { h.eng.Trigger("hold") }
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("r1", false, "")})
	h.wait(t, "a.conf", "r1")

	hold, err := NewHold("s1", "n1", c.Now(), 2*time.Hour, "debugging the meter", "ops", nil)
	check.NoError(t, err)
	holds.Set(&hold)
	h.waitPhase(t, engine.PhaseHeld)
	if !strings.Contains(h.status().Gate, "debugging the meter") {
		t.Fatalf("status should say why: %+v", h.status())
	}
	h.write(t, "a.conf", "by hand")
	h.eng.Offer(engine.Candidate{Revision: 2, Data: doc("r2", false, "")})
	h.pass(t)
	h.waitPhase(t, engine.PhaseHeld)
	h.wait(t, "a.conf", "by hand")
	h.wait(t, "b.conf", "r1")

	c.Add(2*time.Hour - time.Second)
	h.pass(t)
	h.waitPhase(t, engine.PhaseHeld)
	h.wait(t, "a.conf", "by hand")

	c.Add(time.Second) // the hold ends, on the node's clock
	h.eng.Trigger("test")
	h.wait(t, "a.conf", "r2")
	h.wait(t, "b.conf", "r2")
	h.waitPhase(t, engine.PhaseConverged)
}

func TestResourceHoldPausesOnlyThatResource(t *testing.T) {
	c := &fakeClock{t: at("2026-11-25T12:00:00Z")}
	holds := &Holds{}
	g := &Gate{Holds: holds}
	h := start(t, g, c, true)
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("r1", false, "")})
	h.wait(t, "a.conf", "r1")
	hold, err := NewHold("s1", "n1", c.Now(), time.Hour, "", "", []string{"file:/etc/a.conf"})
	check.NoError(t, err)
	holds.Set(&hold)
	h.write(t, "a.conf", "by hand")
	h.write(t, "b.conf", "by hand")
	h.pass(t)
	h.wait(t, "b.conf", "r1")
	h.pass(t)
	h.wait(t, "a.conf", "by hand")
	held := false
	for _, r := range h.status().Resources {
		held = held || (r.ID == "file:/etc/a.conf" && r.State == "held")
	}
	if !held {
		t.Fatalf("status should mark the held resource: %+v", h.status().Resources)
	}
	c.Add(time.Hour)
	h.eng.Trigger("test")
	h.wait(t, "a.conf", "r1")
}

func TestReport(t *testing.T) {
	now := at("2026-11-25T12:00:00Z")
	h, _ := NewHold("s1", "n1", now, time.Hour, "debugging", "", nil)
	g := &Gate{Holds: &Holds{hold: &h}}
	st := g.Report(now, bp(weekly))
	if st.Hold == nil || st.WindowOpen || !st.NextChange.Equal(at("2026-11-28T01:00:00Z")) ||
		st.Windows != "[sat] 02:00-04:00, [sun] 23:00-01:00 Europe/Berlin" {
		t.Fatalf("%+v", st)
	}
	if st = g.Report(now.Add(time.Hour), nil); st.Hold != nil || !st.WindowOpen {
		t.Fatalf("expired hold and no windows: %+v", st)
	}
}
