package containers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
)

// Report says, for each container of the last planned blueprint, whether it
// runs, restarts or failed (with podman's own error), and how many times
// the agent brought it back.
func (d *Driver) Report(ctx context.Context) []driver.Resource {
	d.mu.Lock()
	wanted := slices.Clone(d.wanted)
	errs := maps.Clone(d.errs)
	repairs := maps.Clone(d.repairs)
	d.mu.Unlock()
	if len(wanted) == 0 {
		return nil
	}
	var out []driver.Resource
	cctx, connErr := d.withConn(ctx)
	for _, c := range wanted {
		r := driver.Resource{ID: blueprint.ResourceID("container", c.Name), Repairs: repairs[c.Name]}
		switch {
		case errs[c.Name] != "":
			r.State, r.Message = "failed", errs[c.Name]
		case connErr != nil:
			r.State, r.Message = "unknown", connErr.Error()
		default:
			r = inspect(cctx, c, r)
		}
		out = append(out, r)
	}
	return out
}

func inspect(ctx context.Context, c blueprint.Container, r driver.Resource) driver.Resource {
	data, err := containers.Inspect(ctx, c.Name, nil)
	if err == nil && data.Name != c.Name {
		// podman matched the name as an id prefix of another container.
		err = fmt.Errorf("no container named %q", c.Name)
	}
	if err != nil {
		r.State, r.Message = "pending", err.Error()
		return r
	}
	st := data.State
	switch {
	case st == nil:
		r.State = "unknown"
	case st.Running && data.RestartCount > 0 && time.Since(st.StartedAt) < 10*time.Second:
		// podman's own restart policy brought it back moments ago: it is
		// crash-looping, not settled.
		r.State, r.Health = "restarting", 0.5
		r.Message = fmt.Sprintf("restarted %d times by podman; up for %v", data.RestartCount, time.Since(st.StartedAt).Round(time.Millisecond))
	case st.Running:
		r.State, r.Health = "running", 1
		if h := st.Health; h != nil && h.Status == "unhealthy" {
			r.Health, r.Message = 0.5, fmt.Sprintf("unhealthy (%d failing checks)", h.FailingStreak)
		}
		if data.RestartCount > 0 {
			r.Message = joinMsg(r.Message, fmt.Sprintf("restarted %d times by podman", data.RestartCount))
		}
	case st.Error != "":
		r.State, r.Message = "failed", st.Error
	case st.Restarting || (st.ExitCode != 0 && wantsRunning(c.Restart, st.ExitCode)):
		r.State, r.Message = "restarting", fmt.Sprintf("%s with exit code %d", st.Status, st.ExitCode)
	default:
		r.State, r.Message = st.Status, fmt.Sprintf("exit code %d", st.ExitCode)
	}
	return r
}

func joinMsg(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}
