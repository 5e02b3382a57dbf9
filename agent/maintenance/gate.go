// Package maintenance is the agent's engine.Gate: maintenance windows from
// the blueprint, outside which new revisions are staged, and operator holds,
// which pause repairs and updates for a node or for named resources. Both are
// evaluated on the node with its own clock, so they work offline.
package maintenance

import (
	"fmt"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Gate implements engine.Gate.
//
// The windows that govern a change are those of the applied blueprint: a new
// revision cannot open a window for itself. A node's first blueprint (nothing
// applied yet) applies at once, since a node running nothing has nothing to
// protect; so does a revision marked metadata.urgent.
type Gate struct {
	Holds HoldSource // may be nil: no holds
}

var _ engine.Gate = (*Gate)(nil)

// Check decides whether the engine may update or repair the node now.
func (g *Gate) Check(now time.Time, applied, target *blueprint.Blueprint) engine.Decision {
	d := engine.Decision{Update: true, Repair: true}
	if g.Holds != nil {
		if h, ok := g.Holds.Current(); ok && h.Active(now) {
			if len(h.Resources) == 0 {
				return engine.Decision{Reason: h.String(), Recheck: h.Expiry()}
			}
			// Per-resource holds are applied by Filter; the node as a whole
			// goes on. Recheck when the hold ends so the filter lifts.
			d.Reason, d.Recheck = h.String(), h.Expiry()
		}
	}
	if applied == nil || target == nil || target.Metadata.Urgent {
		return d
	}
	open, change, err := Open(applied.Spec.Maintenance, now)
	if err != nil {
		// Validation refuses such windows; if one slips through, do not
		// stage forever on it.
		d.Reason = join(d.Reason, "maintenance windows ignored: "+err.Error())
		return d
	}
	if open {
		return d
	}
	d.Update = false
	if applied.Hash() != target.Hash() {
		msg := "outside maintenance window"
		if !change.IsZero() {
			msg += "; next opens " + change.UTC().Format(time.RFC3339)
		}
		d.Reason = join(d.Reason, msg)
	}
	if !change.IsZero() && (d.Recheck.IsZero() || change.Before(d.Recheck)) {
		d.Recheck = change
	}
	return d
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// Held reports whether a per-resource hold covers id at now.
func (g *Gate) Held(now time.Time, id string) (Hold, bool) {
	if g.Holds == nil {
		return Hold{}, false
	}
	h, ok := g.Holds.Current()
	if !ok || !h.Active(now) || len(h.Resources) == 0 || !h.Covers(id) {
		return Hold{}, false
	}
	return h, true
}

// Filter wraps a driver so that changes to resources under a per-resource
// hold are left out of its plans until the hold ends; the rest of the node
// is still updated and repaired. Whole-node holds need no filter: Check
// stops the engine itself.
func Filter(d driver.Driver, g *Gate, clock func() time.Time) driver.Driver {
	return driver.Filter{
		Keep: func(now time.Time, c driver.Change) bool {
			_, held := g.Held(now, c.ID)
			return !held
		},
		Mark: g.markHeld,
		Now:  clock,
	}.Wrap(d)
}

// markHeld marks the resources under a per-resource hold as held, so status
// says why they are not repaired.
func (g *Gate) markHeld(now time.Time, rs []driver.Resource) []driver.Resource {
	if g.Holds == nil {
		return rs
	}
	h, ok := g.Holds.Current()
	if !ok || !h.Active(now) {
		return rs
	}
	for _, id := range h.Resources {
		found := false
		for i := range rs {
			if rs[i].ID == id {
				rs[i].State, rs[i].Message, found = "held", h.String(), true
			}
		}
		if !found {
			rs = append(rs, driver.Resource{ID: id, State: "held", Message: h.String(), Health: 1})
		}
	}
	return rs
}

// Describe says what the windows are, for status.
func Describe(m *blueprint.Maintenance) string {
	if m == nil || len(m.Windows) == 0 {
		return "no maintenance windows: changes apply at once"
	}
	s := ""
	for i, w := range m.Windows {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%v %s-%s", w.Days, w.Start, w.End)
	}
	tz := m.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	return s + " " + tz
}

// Status is what `alpha status` and the hub show about a node's gate.
type Status struct {
	Hold       *Hold     `json:"hold,omitempty"`      // in force now
	Windows    string    `json:"windows"`             // human description
	WindowOpen bool      `json:"windowOpen"`          // changes may apply now
	NextChange time.Time `json:"nextChange,omitzero"` // the window opens or closes
}

// Export writes the gate's piece of the node's status: the windows of the
// applied blueprint and the hold in force.
func (g *Gate) Export(ns *streams.NodeStatus, eng engine.Status) {
	ms := g.Report(time.Now(), eng.Applied)
	ns.Windows, ns.WindowOpen = ms.Windows, ms.WindowOpen
	if ms.Hold != nil {
		ns.Hold = ms.Hold.String()
		ns.HoldUntil = ms.Hold.Expiry()
	}
}

// Report builds the gate's status at now for the applied blueprint (nil
// when nothing is applied yet).
func (g *Gate) Report(now time.Time, applied *blueprint.Blueprint) Status {
	var m *blueprint.Maintenance
	if applied != nil {
		m = applied.Spec.Maintenance
	}
	st := Status{Windows: Describe(m)}
	st.WindowOpen, st.NextChange, _ = Open(m, now)
	if g.Holds != nil {
		if h, ok := g.Holds.Current(); ok && h.Active(now) {
			st.Hold = &h
		}
	}
	return st
}
