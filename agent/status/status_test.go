package status_test

import (
	"slices"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/status"
	"github.com/alpha-edge/alpha/streams"
)

func engineStatus(phase engine.Phase, errs []string) engine.Status {
	return engine.Status{NodeStatus: streams.NodeStatus{Phase: phase, Errors: errs,
		Resources: []streams.Resource{{ID: "file:/etc/a", State: "ok", Health: 1}}}}
}

// A node whose credential lacks a grant is not Converged: a denial turns
// the phase to Degraded and is listed among the errors, without touching
// the engine's own status.
func TestDeniedDegradesAndAddsErrors(t *testing.T) {
	var denied []string
	c := status.New("s1", "n1", []status.Exporter{status.Denied(func(time.Time) []string { return denied })})
	for _, tc := range []struct {
		phase, want engine.Phase
	}{
		{engine.PhaseConverged, engine.PhaseDegraded},
		{engine.PhaseApplying, engine.PhaseDegraded},
		{engine.PhaseHeld, engine.PhaseHeld},
		{engine.PhaseInvalid, engine.PhaseInvalid},
	} {
		denied = nil
		es := engineStatus(tc.phase, []string{"x"})
		c.Engine(es)
		if ns := c.Status(); ns.Phase != tc.phase || len(ns.Errors) != 1 || ns.Site != "s1" || ns.Node != "n1" {
			t.Fatalf("no denial: status %+v, want phase %s, the engine's one error, site s1 node n1", ns, tc.phase)
		}
		denied = []string{`publish "a.b"`}
		c.Refresh()
		ns := c.Status()
		if ns.Phase != tc.want {
			t.Errorf("engine phase %s with a denial: status phase %s, want %s", tc.phase, ns.Phase, tc.want)
		}
		if want := []string{"x", `permission denied: publish "a.b"`}; !slices.Equal(ns.Errors, want) {
			t.Errorf("errors %q, want %q", ns.Errors, want)
		}
		if len(c.Last().Errors) != 1 || c.Last().Phase != tc.phase {
			t.Errorf("the engine's status was changed: %+v", c.Last().NodeStatus)
		}
	}
}

// Exporters run in order on a copy of the engine's resources, and a status
// that changed is signalled for publishing once.
func TestExportersOnACopy(t *testing.T) {
	var order []string
	c := status.New("s1", "n1", []status.Exporter{
		func(ns *streams.NodeStatus, _ engine.Status) {
			order = append(order, "a")
			ns.Resources[0].Health = 0.5
		},
		func(ns *streams.NodeStatus, _ engine.Status) { order = append(order, "b"); ns.Windows = "w" },
	})
	es := engineStatus(engine.PhaseConverged, nil)
	c.Engine(es)
	if !slices.Equal(order, []string{"a", "b"}) {
		t.Fatalf("exporters ran as %v, want a then b", order)
	}
	if es.Resources[0].Health != 1 {
		t.Fatal("an exporter rewrote the engine's own resources")
	}
	if ns := c.Status(); ns.Resources[0].Health != 0.5 || ns.Windows != "w" {
		t.Fatalf("status %+v lacks the exporters' pieces", ns)
	}
	select {
	case <-c.AppliedChanged():
		t.Fatal("applied blueprint did not change (nil to nil), yet it was signalled")
	default:
	}
}
