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

// filter keeps a driver's changes off workloads a policy stopped, except
// removals, and reports those workloads as stopped.
func (a *actuator) filter(d driver.Driver) driver.Driver {
	return driver.Filter{
		Keep: func(now time.Time, c driver.Change) bool {
			return c.Op == driver.Delete || !a.isStopped(c.ID, now)
		},
		Mark: func(now time.Time, res []driver.Resource) []driver.Resource {
			for i := range res {
				if a.isStopped(res[i].ID, now) {
					res[i].State, res[i].Message = "stopped", "stopped by a remediation policy"
				}
			}
			return res
		},
	}.Wrap(d)
}
