package health

import (
	"context"
	"sync"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Monitor ties the collectors' samples to health and remediation: it keeps
// the latest value of each signal, re-evaluates health on every batch,
// publishes what changed as health telemetry and hands the signals (with
// health.* added) to the remediation policies. Every field is optional.
type Monitor struct {
	Blueprint  func() *blueprint.Blueprint                 // the applied blueprint
	Resources  func(ctx context.Context) []driver.Resource // the drivers' reports
	Compliance func() *float64                             // score, nil when unknown
	Publish    func(streams.Metric)                        // the telemetry publisher
	Observe    func(ctx context.Context, signals map[string]float64)
	OnChange   func() // after an evaluation that changed some health

	mu      sync.Mutex
	signals map[string]float64
	tracker Tracker
	report  Report
}

// Sink is the collectors' sink: it publishes each sample, then evaluates.
// Pass it to telemetry.Run.
func (m *Monitor) Sink(ctx context.Context) func([]streams.Metric) {
	return func(ms []streams.Metric) {
		for _, s := range ms {
			if m.Publish != nil {
				m.Publish(s)
			}
		}
		m.Update(ctx, ms)
	}
}

// Update records samples and re-evaluates; it returns the new report.
func (m *Monitor) Update(ctx context.Context, ms []streams.Metric) Report {
	m.mu.Lock()
	if m.signals == nil {
		m.signals = map[string]float64{}
	}
	for _, s := range ms {
		if s.Kind == streams.KindMetric && len(s.Labels) == 0 {
			// Labelled series (per interface, per disk) are not single
			// signals; policies name unlabelled ones.
			m.signals[s.Name] = s.Value
		}
	}
	in := Input{Signals: copyMap(m.signals)}
	m.mu.Unlock()
	if m.Resources != nil {
		in.Resources = m.Resources(ctx)
	}
	if m.Compliance != nil {
		in.Compliance = m.Compliance()
	}
	var bp *blueprint.Blueprint
	if m.Blueprint != nil {
		bp = m.Blueprint()
	}
	rep := Evaluate(bp, in)
	m.mu.Lock()
	changes := m.tracker.Changes(rep)
	m.report = rep
	m.mu.Unlock()
	if m.Publish != nil {
		for _, c := range changes {
			m.Publish(c)
		}
	}
	if len(changes) > 0 && m.OnChange != nil {
		m.OnChange()
	}
	if m.Observe != nil {
		sig := in.Signals
		for k, v := range rep.Signals() {
			sig[k] = v
		}
		m.Observe(ctx, sig)
	}
	return rep
}

// Report is the last evaluation, for status (Report.Fill).
func (m *Monitor) Report() Report {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.report
}

func copyMap(in map[string]float64) map[string]float64 {
	out := make(map[string]float64, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
