package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/remediation"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/blueprint"
)

// StopFor is how long a workload stopped by a remediation policy stays
// stopped: drift repair would otherwise start it again at once. After it, the
// blueprint wins again (and the policy may act again if its condition holds).
const StopFor = 15 * time.Minute

// actuator carries out remediation actions on the workload drivers.
type actuator struct {
	containers *containers.Driver
	units      *units.Driver // nil in the dev sandbox

	mu      sync.Mutex
	stopped map[string]time.Time // resource id -> until
}

var _ remediation.Actuator = (*actuator)(nil)

func (a *actuator) split(target string) (string, string, error) {
	kind, name, ok := strings.Cut(target, ":")
	if !ok || name == "" {
		return "", "", fmt.Errorf("remediation target %q is not kind:name", target)
	}
	return kind, name, nil
}

// Restart restarts a container or unit.
func (a *actuator) Restart(ctx context.Context, target string) error {
	kind, name, err := a.split(target)
	if err != nil {
		return err
	}
	a.mu.Lock()
	delete(a.stopped, target)
	a.mu.Unlock()
	switch {
	case kind == "container":
		return a.containers.Restart(ctx, name)
	case kind == "unit" && a.units != nil:
		return a.units.Restart(ctx, name)
	}
	return fmt.Errorf("cannot restart %q on this node", target)
}

// Stop stops a container or unit and keeps drift repair off it for StopFor.
func (a *actuator) Stop(ctx context.Context, target string) error {
	kind, name, err := a.split(target)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.stopped[target] = time.Now().Add(StopFor)
	a.mu.Unlock()
	switch {
	case kind == "container":
		return a.containers.Stop(ctx, name)
	case kind == "unit" && a.units != nil:
		return a.units.Stop(ctx, name)
	}
	return fmt.Errorf("cannot stop %q on this node", target)
}

func (a *actuator) isStopped(id string, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	until, ok := a.stopped[id]
	if ok && now.After(until) {
		delete(a.stopped, id)
		return false
	}
	return ok
}

// filter keeps a driver's changes off workloads a policy stopped.
func (a *actuator) filter(d driver.Driver) driver.Driver { return &stopFilter{Driver: d, a: a} }

type stopFilter struct {
	driver.Driver
	a *actuator
}

func (f *stopFilter) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	p, err := f.Driver.Plan(ctx, bp)
	now := time.Now()
	out := p[:0:0]
	for _, c := range p {
		if c.Op == driver.Delete || !f.a.isStopped(c.ID, now) {
			out = append(out, c)
		}
	}
	return out, err
}

// Watch and Report pass through, so wrapping hides no capability.
func (f *stopFilter) Watch(ctx context.Context, notify func(string)) error {
	if w, ok := f.Driver.(driver.Watcher); ok {
		return w.Watch(ctx, notify)
	}
	<-ctx.Done()
	return nil
}

func (f *stopFilter) Report(ctx context.Context) []driver.Resource {
	r, ok := f.Driver.(driver.Reporter)
	if !ok {
		return nil
	}
	res := r.Report(ctx)
	now := time.Now()
	for i := range res {
		if f.a.isStopped(res[i].ID, now) {
			res[i].State, res[i].Message = "stopped", "stopped by a remediation policy"
		}
	}
	return res
}
