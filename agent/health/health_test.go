package health_test

import (
	"context"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/health"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func f(v float64) *float64 { return &v }

func TestSolutionIsProductOverDependencies(t *testing.T) {
	bp := &blueprint.Blueprint{Spec: blueprint.Spec{
		Telemetry: &blueprint.Telemetry{Sensors: []blueprint.Sensor{
			{Name: "temperature.cpu", Max: f(85)},
			{Name: "voltage.in", Min: f(11), Max: f(13)},
		}},
		Health: &blueprint.Health{DependsOn: []string{"container:web", "unit:meter.service", "sensor:temperature.cpu", "compliance"}},
	}}
	res := []driver.Resource{
		{ID: "container:web", State: "running", Health: 0.5, Message: "1 of 2 replicas"},
		{ID: "unit:meter.service", State: "active", Health: 1},
		{ID: "container:unrelated", State: "failed", Health: 0}, // not a dependency
	}
	score := 0.8
	cases := []struct {
		name     string
		signals  map[string]float64
		want     float64
		limiting string
	}{
		{"in range", map[string]float64{"temperature.cpu": 70, "voltage.in": 9}, 0.4, "container:web"},
		{"hot", map[string]float64{"temperature.cpu": 90}, 0, "sensor:temperature.cpu"},
		{"no reading", map[string]float64{}, 0, "sensor:temperature.cpu"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rep := health.Evaluate(bp, health.Input{Resources: res, Signals: c.signals, Compliance: &score})
			if rep.Solution < c.want-1e-9 || rep.Solution > c.want+1e-9 {
				t.Fatalf("solution %v, want %v (%+v)", rep.Solution, c.want, rep)
			}
			check.Equal(t, rep.Limiting[0], c.limiting)
		})
	}
	// voltage.in is out of range but nothing depends on it.
	rep := health.Evaluate(bp, health.Input{Resources: res, Signals: map[string]float64{"temperature.cpu": 70, "voltage.in": 9}, Compliance: &score})
	for _, it := range rep.Items {
		if it.ID == "sensor:voltage.in" {
			check.Equal(t, it.Health, 0.0)
			check.Equal(t, it.Reason, "voltage.in 9 below min 11")
		}
	}
	check.Equal(t, rep.Signals()["health.solution"], rep.Solution)
	check.Equal(t, rep.Why(), "container:web running: 1 of 2 replicas, compliance score 0.80")

	ns := streams.NodeStatus{Resources: []streams.Resource{{ID: "container:web", State: "running", Health: 0.5}}}
	rep.Fill(&ns)
	byID := map[string]streams.Resource{}
	for _, r := range ns.Resources {
		byID[r.ID] = r
	}
	check.Equal(t, byID["solution"].State, "degraded")
	check.Equal(t, byID["sensor:temperature.cpu"].Health, 1.0)
	check.Equal(t, byID["compliance"].Health, 0.8)
}

func TestWithoutDependsOnEverythingCounts(t *testing.T) {
	rep := health.Evaluate(&blueprint.Blueprint{}, health.Input{Resources: []driver.Resource{
		{ID: "container:a", Health: 1}, {ID: "container:b", Health: 0.5}}})
	check.Equal(t, rep.Solution, 0.5)
	rep = health.Evaluate(&blueprint.Blueprint{}, health.Input{})
	check.Equal(t, rep.Solution, 1.0)
}

func TestTrackerPublishesChangesOnly(t *testing.T) {
	var tr health.Tracker
	in := health.Input{Resources: []driver.Resource{{ID: "container:a", Health: 1}}}
	first := tr.Changes(health.Evaluate(nil, in))
	check.Equal(t, len(first), 2) // container:a and solution
	check.Equal(t, len(tr.Changes(health.Evaluate(nil, in))), 0)
	in.Resources[0].Health = 0
	ch := tr.Changes(health.Evaluate(nil, in))
	check.Equal(t, len(ch), 2)
	for _, m := range ch {
		check.Equal(t, m.Kind, streams.KindHealth)
		check.Equal(t, m.Value, 0.0)
	}
}

func TestMonitorPublishesAndObserves(t *testing.T) {
	bp := &blueprint.Blueprint{Spec: blueprint.Spec{Telemetry: &blueprint.Telemetry{Sensors: []blueprint.Sensor{{Name: "temperature.cpu", Max: f(85)}}}}}
	var published []streams.Metric
	var observed map[string]float64
	m := &health.Monitor{
		Blueprint: func() *blueprint.Blueprint { return bp },
		Publish:   func(x streams.Metric) { published = append(published, x) },
		Observe:   func(_ context.Context, s map[string]float64) { observed = s },
	}
	sink := m.Sink(context.Background())
	sink([]streams.Metric{{Name: "temperature.cpu", Value: 90, Kind: streams.KindMetric}})
	check.Equal(t, len(published), 3) // the sample, the sensor's health, the solution's
	check.Equal(t, observed["temperature.cpu"], 90.0)
	check.Equal(t, observed["health.solution"], 0.0)
	check.Equal(t, observed["health.sensor:temperature.cpu"], 0.0)
	sink([]streams.Metric{{Name: "temperature.cpu", Value: 91, Kind: streams.KindMetric}})
	check.Equal(t, len(published), 4) // health unchanged: only the sample
	check.Equal(t, m.Report().Solution, 0.0)
}
