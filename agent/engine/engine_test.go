package engine_test

import (
	"context"
	"errors"
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

func doc(name, content string) []byte {
	return []byte("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: " + name + "}\nspec:\n  files:\n    - path: /etc/hello.conf\n      content: \"" + content + "\"\n")
}

type harness struct {
	eng    *engine.Engine
	root   string
	state  string
	mu     sync.Mutex
	last   engine.Status
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, root, state string, gate engine.Gate) *harness {
	t.Helper()
	return startWith(t, root, state, func(c *engine.Config) { c.Gate = gate })
}

// startWith starts an engine with the files driver on root; tune changes
// its config first.
func startWith(t *testing.T, root, state string, tune func(*engine.Config)) *harness {
	t.Helper()
	fd, err := files.New(driver.Env{Root: root, StateDir: filepath.Join(state, "files")})
	check.NoError(t, err)
	h := &harness{root: root, state: state, done: make(chan struct{})}
	cfg := engine.Config{
		Drivers:  []driver.Driver{fd},
		StateDir: filepath.Join(state, "engine"),
		Resync:   time.Hour,
		OnStatus: func(s engine.Status) { h.mu.Lock(); h.last = s; h.mu.Unlock() },
	}
	tune(&cfg)
	h.eng, err = engine.New(cfg)
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.eng.Run(ctx); close(h.done) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.cancel()
	<-h.done
}

func (h *harness) status() engine.Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *harness) waitFile(t *testing.T, want string) {
	t.Helper()
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		b, err := os.ReadFile(filepath.Join(h.root, "etc/hello.conf"))
		if err != nil {
			return err
		}
		if string(b) != want {
			return &mismatch{string(b), want}
		}
		return nil
	})
}

type mismatch struct{ got, want string }

func (m *mismatch) Error() string { return "content " + m.got + ", want " + m.want }

func (h *harness) waitPhase(t *testing.T, p engine.Phase, applied uint64) engine.Status {
	t.Helper()
	var s engine.Status
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		s = h.status()
		if s.Phase != p || s.AppliedRevision != applied {
			return &mismatch{string(s.Phase) + " " + s.Message, string(p)}
		}
		return nil
	})
	return s
}

func TestInvalidRevisionKeepsLastGood(t *testing.T) {
	h := start(t, t.TempDir(), t.TempDir(), nil)
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "one")})
	h.waitFile(t, "one")
	h.waitPhase(t, engine.PhaseConverged, 1)

	h.eng.Offer(engine.Candidate{Revision: 2, Data: []byte("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: x}\nspec:\n  files:\n    - path: ../escape\n")})
	s := h.waitPhase(t, engine.PhaseInvalid, 1)
	if s.DesiredRevision != 2 || len(s.Invalid) != 1 || !strings.Contains(s.Invalid[0], `spec.files[0].path: "../escape"`) {
		t.Fatalf("status %+v", s)
	}
	h.waitFile(t, "one")

	// Drift is still repaired from the last good revision.
	check.NoError(t, os.WriteFile(filepath.Join(h.root, "etc/hello.conf"), []byte("hand"), 0o644))
	h.waitFile(t, "one")
	check.For(t, 2*time.Second, 10*time.Millisecond, func() error {
		if h.status().Repairs == 0 {
			return os.ErrNotExist
		}
		return nil
	})
}

// A refused revision offered between two offers of the running one (an
// older signed revision replayed while a site's new mirror catches up)
// stops counting once the running one is offered again.
func TestTargetOfferedAgainClearsRefusal(t *testing.T) {
	h := start(t, t.TempDir(), t.TempDir(), nil)
	h.eng.Offer(engine.Candidate{Revision: 2, Data: doc("a", "two")})
	h.waitPhase(t, engine.PhaseConverged, 2)
	h.eng.Offer(engine.Candidate{Revision: 1, Err: errors.New("signature: older than the last accepted revision (replay)")})
	h.waitPhase(t, engine.PhaseInvalid, 2)
	h.eng.Offer(engine.Candidate{Revision: 2, Data: doc("a", "two")})
	s := h.waitPhase(t, engine.PhaseConverged, 2)
	if s.DesiredRevision != 2 || len(s.Invalid) != 0 {
		t.Fatalf("status %+v", s)
	}
}

func TestRestartOfflineReappliesPersisted(t *testing.T) {
	root, state := t.TempDir(), t.TempDir()
	h := start(t, root, state, nil)
	h.eng.Offer(engine.Candidate{Revision: 7, Data: doc("a", "seven")})
	h.waitPhase(t, engine.PhaseConverged, 7)
	h.stop()
	check.NoError(t, os.Remove(filepath.Join(root, "etc/hello.conf")))
	h2 := start(t, root, state, nil) // nothing offered: no server
	h2.waitFile(t, "seven")
	h2.waitPhase(t, engine.PhaseConverged, 7)
}

func TestDeleteRemovesEverything(t *testing.T) {
	h := start(t, t.TempDir(), t.TempDir(), nil)
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "x")})
	h.waitFile(t, "x")
	h.eng.Offer(engine.Candidate{Revision: 2, Deleted: true})
	h.waitPhase(t, engine.PhaseRemoved, 2)
	if _, err := os.Stat(filepath.Join(h.root, "etc")); !os.IsNotExist(err) {
		t.Fatal("files remain after the key was deleted")
	}
}

// closedGate holds updates back (a maintenance window that is shut) but lets
// repairs through, until opened.
type closedGate struct {
	mu   sync.Mutex
	open bool
}

func (g *closedGate) Check(now time.Time, applied, target *blueprint.Blueprint) engine.Decision {
	g.mu.Lock()
	defer g.mu.Unlock()
	return engine.Decision{Update: g.open, Repair: true, Reason: "outside maintenance window", Recheck: now.Add(20 * time.Millisecond)}
}

func TestGateStagesUpdates(t *testing.T) {
	g := &closedGate{open: true}
	h := start(t, t.TempDir(), t.TempDir(), g)
	h.eng.Offer(engine.Candidate{Revision: 1, Data: doc("a", "v1")})
	h.waitPhase(t, engine.PhaseConverged, 1)
	g.mu.Lock()
	g.open = false
	g.mu.Unlock()
	h.eng.Offer(engine.Candidate{Revision: 2, Data: doc("a", "v2")})
	h.waitPhase(t, engine.PhaseStaged, 1)
	h.waitFile(t, "v1")
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
	h.waitFile(t, "v2")
	h.waitPhase(t, engine.PhaseConverged, 2)
}
