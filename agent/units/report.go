package units

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
)

// Report says, for each unit of the last planned blueprint, whether it runs,
// restarts or failed (with systemd's result and exit status), and how many
// times the agent brought it back.
func (d *Driver) Report(ctx context.Context) []driver.Resource {
	d.mu.Lock()
	wanted := slices.Clone(d.wanted)
	errs := maps.Clone(d.errs)
	repairs := maps.Clone(d.repairs)
	ran := map[string]string{}
	for k, v := range d.owned {
		ran[k] = v.Ran
	}
	d.mu.Unlock()
	if len(wanted) == 0 {
		return nil
	}
	conn, connErr := d.systemd(ctx)
	var out []driver.Resource
	for _, u := range wanted {
		r := driver.Resource{ID: blueprint.ResourceID("unit", u.Name), Repairs: repairs[u.Name]}
		switch {
		case errs[u.Name] != "":
			r.State, r.Message = "failed", errs[u.Name]
		case connErr != nil:
			r.State, r.Message = "unknown", connErr.Error()
		default:
			props, err := conn.GetUnitPropertiesContext(ctx, u.Name)
			if err != nil {
				r.State, r.Message = "unknown", err.Error()
				break
			}
			activeState, _ := props["ActiveState"].(string)
			sub, _ := props["SubState"].(string)
			switch {
			case activeState == "active" && u.State != "stopped":
				r.State, r.Health = "running", 1
			case activeState == "activating" || sub == "auto-restart":
				r.State, r.Message = "restarting", activeState+"/"+sub
			case activeState == "failed":
				r.State, r.Message = "failed", d.why(ctx, conn, u.Name)
			case u.State == "stopped" && activeState == "inactive":
				r.State, r.Health = "stopped", 1
			case activeState == "inactive" && ran[u.Name] == specHash(u):
				r.State, r.Health, r.Message = "completed", 1, "ran to completion"
			default:
				r.State, r.Message = activeState, fmt.Sprintf("%s/%s", activeState, sub)
			}
		}
		out = append(out, r)
	}
	return out
}
