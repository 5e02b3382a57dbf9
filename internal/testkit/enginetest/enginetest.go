// Package enginetest runs the real agent engine over a set of drivers for a
// test, and waits on its status.
package enginetest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// Agent is an engine running in the background until the test ends or Stop.
type Agent struct {
	Engine *engine.Engine
	State  string

	mu      sync.Mutex
	last    engine.Status
	passes  int
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
	rev     uint64
}

// Start runs an engine over drivers with its state under state (reuse the
// same state to model an agent restart).
func Start(t testing.TB, state string, drivers ...driver.Driver) *Agent {
	t.Helper()
	a := &Agent{State: state, done: make(chan struct{})}
	var err error
	a.Engine, err = engine.New(engine.Config{
		Drivers:  drivers,
		StateDir: filepath.Join(state, "engine"),
		Resync:   time.Hour, // drift must be found through the drivers' watchers
		OnStatus: func(s engine.Status) { a.mu.Lock(); a.last = s; a.passes++; a.mu.Unlock() },
	})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	go func() { a.Engine.Run(ctx); close(a.done) }()
	t.Cleanup(a.Stop)
	return a
}

// Stop stops the engine; it is safe to call twice.
func (a *Agent) Stop() {
	a.mu.Lock()
	stopped := a.stopped
	a.stopped = true
	a.mu.Unlock()
	if !stopped {
		a.cancel()
		<-a.done
	}
}

// Offer hands the engine the next revision of doc.
func (a *Agent) Offer(doc string) uint64 {
	a.mu.Lock()
	a.rev++
	rev := a.rev
	a.mu.Unlock()
	a.Engine.Offer(engine.Candidate{Revision: rev, Data: []byte(doc)})
	return rev
}

// SetRevision makes the next Offer use rev+1 (after a restart).
func (a *Agent) SetRevision(rev uint64) { a.mu.Lock(); a.rev = rev; a.mu.Unlock() }

// Status is the last pass's status.
func (a *Agent) Status() engine.Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// Resource returns the reported state of one resource id.
func (a *Agent) Resource(id string) (driver.Resource, bool) {
	for _, r := range a.Status().Resources {
		if r.ID == id {
			return r, true
		}
	}
	return driver.Resource{}, false
}

// WaitConverged waits until revision rev is applied and converged.
func (a *Agent) WaitConverged(t testing.TB, rev uint64, within time.Duration) engine.Status {
	t.Helper()
	var s engine.Status
	check.For(t, within, 10*time.Millisecond, func() error {
		s = a.Status()
		if s.Phase != engine.PhaseConverged || s.AppliedRevision != rev {
			return fmt.Errorf("phase %s, applied %d, want Converged %d: %s %s", s.Phase, s.AppliedRevision, rev, s.Message, strings.Join(s.Errors, "; "))
		}
		return nil
	})
	return s
}

// WaitError waits until the status carries an error containing every part.
func (a *Agent) WaitError(t testing.TB, within time.Duration, parts ...string) string {
	t.Helper()
	var found string
	check.For(t, within, 10*time.Millisecond, func() error {
		s := a.Status()
	next:
		for _, e := range s.Errors {
			for _, p := range parts {
				if !strings.Contains(e, p) {
					continue next
				}
			}
			found = e
			return nil
		}
		return fmt.Errorf("no error containing %q among %q", parts, s.Errors)
	})
	return found
}

// Passes is how many reconcile passes the engine has finished.
func (a *Agent) Passes() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.passes
}

// MorePasses triggers passes until n more have finished.
func (a *Agent) MorePasses(t testing.TB, n int) {
	t.Helper()
	target := a.Passes() + n
	check.For(t, 30*time.Second, 10*time.Millisecond, func() error {
		if p := a.Passes(); p < target {
			a.Engine.Trigger("test")
			return fmt.Errorf("%d passes, want %d", p, target)
		}
		return nil
	})
}
