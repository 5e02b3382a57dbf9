// Package health computes the health in [0, 1] of every managed thing and of
// the solution, the product over what the blueprint says it depends on.
package health

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Ids of health items that are not driver resources.
const (
	// SensorPrefix prefixes a declared sensor: sensor:temperature.cpu.
	SensorPrefix = "sensor:"
	// ComplianceID is the compliance score's item.
	ComplianceID = "compliance"
	// SolutionID is the solution's own health in status and telemetry.
	SolutionID = "solution"
)

// Input is what health is computed from.
type Input struct {
	Resources  []driver.Resource  // the drivers' Reporter output
	Signals    map[string]float64 // latest value of each signal by name
	Compliance *float64           // score in [0, 1], nil when not evaluated
}

// Item is one thing's health and why.
type Item struct {
	ID     string  `json:"id"`
	Health float64 `json:"health"`
	Reason string  `json:"reason,omitempty"`
}

// Report is the health of everything and of the solution.
type Report struct {
	Solution float64 `json:"solution"`
	// Limiting names the dependencies below 1, worst first, for people.
	Limiting []string `json:"limiting,omitempty"`
	Items    []Item   `json:"items"`
}

// Evaluate computes every item's health and the solution's. Resources
// report their own health; a sensor is 1 inside its declared range and 0
// outside it or without a reading; compliance is its score. The solution is
// the product over spec.health.dependsOn, or over every item when the
// blueprint declares no dependencies. A dependency with no item counts 0:
// a thing nobody reports on is not known to be healthy.
func Evaluate(bp *blueprint.Blueprint, in Input) Report {
	items := map[string]Item{}
	for _, r := range in.Resources {
		h := clamp(r.Health)
		reason := ""
		if h < 1 {
			reason = r.State
			if r.Message != "" {
				reason += ": " + r.Message
			}
		}
		items[r.ID] = Item{ID: r.ID, Health: h, Reason: reason}
	}
	if bp != nil && bp.Spec.Telemetry != nil {
		for _, s := range bp.Spec.Telemetry.Sensors {
			items[SensorPrefix+s.Name] = sensor(s, in.Signals)
		}
	}
	if in.Compliance != nil {
		it := Item{ID: ComplianceID, Health: clamp(*in.Compliance)}
		if it.Health < 1 {
			it.Reason = fmt.Sprintf("score %.2f", it.Health)
		}
		items[ComplianceID] = it
	}
	var deps []string
	if bp != nil && bp.Spec.Health != nil && len(bp.Spec.Health.DependsOn) > 0 {
		deps = bp.Spec.Health.DependsOn
	} else {
		for id := range items {
			deps = append(deps, id)
		}
	}
	rep := Report{Solution: 1}
	for _, id := range deps {
		it, ok := items[id]
		if !ok {
			it = Item{ID: id, Health: 0, Reason: "not reported"}
			items[id] = it
		}
		rep.Solution *= it.Health
		if it.Health < 1 {
			rep.Limiting = append(rep.Limiting, id)
		}
	}
	sort.SliceStable(rep.Limiting, func(i, j int) bool { return items[rep.Limiting[i]].Health < items[rep.Limiting[j]].Health })
	for _, it := range items {
		rep.Items = append(rep.Items, it)
	}
	sort.Slice(rep.Items, func(i, j int) bool { return rep.Items[i].ID < rep.Items[j].ID })
	return rep
}

func sensor(s blueprint.Sensor, signals map[string]float64) Item {
	it := Item{ID: SensorPrefix + s.Name, Health: 1}
	v, ok := signals[s.Name]
	switch {
	case !ok:
		it.Health, it.Reason = 0, "no reading"
	case s.Max != nil && v > *s.Max:
		it.Health, it.Reason = 0, fmt.Sprintf("%s %.4g above max %.4g", s.Name, v, *s.Max)
	case s.Min != nil && v < *s.Min:
		it.Health, it.Reason = 0, fmt.Sprintf("%s %.4g below min %.4g", s.Name, v, *s.Min)
	}
	return it
}

func clamp(v float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return math.Max(0, math.Min(1, v))
}

// Signals returns the report as signals a remediation condition can name:
// health.solution and health.<id> (e.g. health.container:web).
func (r Report) Signals() map[string]float64 {
	out := map[string]float64{"health." + SolutionID: r.Solution}
	for _, it := range r.Items {
		out["health."+it.ID] = it.Health
	}
	return out
}

// Why says what limits the solution, for people and for a rollback's
// reason: each limiting item, worst first, with its own reason
// ("container:web exited: exit code 1").
func (r Report) Why() string {
	reasons := map[string]string{}
	for _, it := range r.Items {
		reasons[it.ID] = it.Reason
	}
	parts := make([]string, 0, len(r.Limiting))
	for _, id := range r.Limiting {
		if reasons[id] != "" {
			parts = append(parts, id+" "+reasons[id])
		} else {
			parts = append(parts, id)
		}
	}
	return strings.Join(parts, ", ")
}

// Export writes the monitor's piece of the node's status: its last report,
// once it has items.
func (m *Monitor) Export(ns *streams.NodeStatus) {
	rep := m.Report()
	if len(rep.Items) > 0 {
		rep.Fill(ns)
		ns.Health = &rep.Solution
	}
}

// Fill writes the report into a node status: each resource's health and
// reason from the report, sensor and compliance items added as resources,
// and the solution as a resource with id "solution" (until NodeStatus has a
// field of its own for it).
func (r Report) Fill(ns *streams.NodeStatus) {
	byID := map[string]Item{}
	for _, it := range r.Items {
		byID[it.ID] = it
	}
	seen := map[string]bool{}
	for i, res := range ns.Resources {
		if it, ok := byID[res.ID]; ok {
			ns.Resources[i].Health = it.Health
			seen[res.ID] = true
		}
	}
	for _, it := range r.Items {
		if seen[it.ID] || !(strings.HasPrefix(it.ID, SensorPrefix) || it.ID == ComplianceID || it.ID == SolutionID) {
			continue
		}
		ns.Resources = append(ns.Resources, streams.Resource{ID: it.ID, State: state(it.Health), Message: it.Reason, Health: it.Health})
	}
	msg := ""
	if len(r.Limiting) > 0 {
		msg = "limited by " + strings.Join(r.Limiting, ", ")
	}
	for i := range ns.Resources {
		if ns.Resources[i].ID == SolutionID {
			ns.Resources[i] = streams.Resource{ID: SolutionID, State: state(r.Solution), Message: msg, Health: r.Solution}
			return
		}
	}
	ns.Resources = append(ns.Resources, streams.Resource{ID: SolutionID, State: state(r.Solution), Message: msg, Health: r.Solution})
}

func state(h float64) string {
	switch {
	case h >= 1:
		return "healthy"
	case h <= 0:
		return "unhealthy"
	}
	return "degraded"
}

// Tracker turns successive reports into health telemetry: one kind=health
// message per item whose health changed, and one for the solution.
type Tracker struct {
	last map[string]float64
}

// Changes returns the health messages for what changed since the last call
// (everything on the first). Publish them; they are never dropped for metrics.
func (t *Tracker) Changes(r Report) []streams.Metric {
	if t.last == nil {
		t.last = map[string]float64{}
	}
	var out []streams.Metric
	emit := func(id string, h float64, reason string) {
		if old, ok := t.last[id]; ok && old == h {
			return
		}
		t.last[id] = h
		out = append(out, streams.Metric{Name: "health", Value: h, Layer: "health", Kind: streams.KindHealth,
			Labels: map[string]string{"id": id}, Text: reason})
	}
	for _, it := range r.Items {
		emit(it.ID, it.Health, it.Reason)
	}
	reason := ""
	if len(r.Limiting) > 0 {
		reason = "limited by " + strings.Join(r.Limiting, ", ")
	}
	emit(SolutionID, r.Solution, reason)
	return out
}
