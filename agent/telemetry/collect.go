package telemetry

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Collector reads one layer's signals. Collect returns samples with Name,
// Value, Unit, Layer and Labels set; the runner stamps the rest.
type Collector interface {
	Name() string
	Collect(ctx context.Context) ([]streams.Metric, error)
}

// Scheduled is a collector with its own interval.
type Scheduled struct {
	Collector
	Every time.Duration
}

// DefaultInterval is a collector's interval when the blueprint gives none.
const DefaultInterval = 15 * time.Second

// Schedule picks the collectors the blueprint turns on, with their
// intervals; without a telemetry section every available collector runs at
// the default interval.
func Schedule(t *blueprint.Telemetry, available ...Collector) []Scheduled {
	var out []Scheduled
	if t == nil || len(t.Collectors) == 0 {
		for _, c := range available {
			out = append(out, Scheduled{c, DefaultInterval})
		}
		return out
	}
	for _, want := range t.Collectors {
		for _, c := range available {
			if c.Name() == want.Name {
				every := want.Interval.Duration
				if every <= 0 {
					every = DefaultInterval
				}
				out = append(out, Scheduled{c, every})
			}
		}
	}
	return out
}

// Run collects each scheduled collector on its own ticker (first sample
// after a random fraction of its interval, so a fleet that boots together
// does not sample in step) and hands every batch to sink. It returns when
// ctx is done.
func Run(ctx context.Context, log *slog.Logger, sink func([]streams.Metric), cs ...Scheduled) {
	if log == nil {
		log = slog.Default()
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first := time.Duration(rand.Int64N(int64(c.Every)/4 + 1))
			timer := time.NewTimer(first)
			defer timer.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
				ms, err := Collect(ctx, c.Collector)
				if err != nil {
					log.Debug("collector failed", "collector", c.Name(), "err", err)
				}
				if len(ms) > 0 {
					sink(ms)
				}
				timer.Reset(c.Every)
			}
		}()
	}
	wg.Wait()
}

// Collect runs one collector once and stamps its samples as metrics taken now.
func Collect(ctx context.Context, c Collector) ([]streams.Metric, error) {
	ms, err := c.Collect(ctx)
	now := time.Now().UTC()
	for i := range ms {
		if ms[i].TS.IsZero() {
			ms[i].TS = now
		}
		if ms[i].Kind == "" {
			ms[i].Kind = streams.KindMetric
		}
		if ms[i].Layer == "" {
			ms[i].Layer = c.Name()
		}
	}
	return ms, err
}

// Resources turns the drivers' Reporter output into per-resource metrics
// (health, up, repairs) in layer "units" or "containers" by the id's kind.
// list is called on every collection, so drivers added later plug in.
type Resources struct {
	Layer string // "units" or "containers"; the ids of that kind are kept
	List  func(ctx context.Context) []driver.Resource
}

// Name is the layer.
func (r Resources) Name() string { return r.Layer }

// Collect reports each resource of the layer's kind.
func (r Resources) Collect(ctx context.Context) ([]streams.Metric, error) {
	kind := strings.TrimSuffix(r.Layer, "s") + ":"
	var out []streams.Metric
	for _, res := range r.List(ctx) {
		if !strings.HasPrefix(res.ID, kind) {
			continue
		}
		lab := map[string]string{"id": res.ID, "state": res.State}
		up := 0.0
		switch res.State {
		case "ok", "running", "active":
			up = 1
		}
		out = append(out,
			streams.Metric{Name: "resource.health", Value: res.Health, Labels: lab},
			streams.Metric{Name: "resource.up", Value: up, Labels: map[string]string{"id": res.ID}},
			streams.Metric{Name: "resource.repairs", Value: float64(res.Repairs), Labels: map[string]string{"id": res.ID}},
		)
	}
	return out, nil
}

// Agent reports the agent's own reconcile figures.
type Agent struct {
	Status func() engine.Status
}

// Name is the layer.
func (Agent) Name() string { return "agent" }

// Collect reports repairs, errors, whether the node is converged, the
// applied revision and the age of the last reconcile.
func (a Agent) Collect(context.Context) ([]streams.Metric, error) {
	s := a.Status()
	conv := 0.0
	if s.Phase == engine.PhaseConverged {
		conv = 1
	}
	out := []streams.Metric{
		{Name: "reconcile.repairs", Value: float64(s.Repairs)},
		{Name: "reconcile.errors", Value: float64(len(s.Errors))},
		{Name: "reconcile.converged", Value: conv, Labels: map[string]string{"phase": s.Phase}},
		{Name: "reconcile.applied_revision", Value: float64(s.AppliedRevision)},
	}
	if !s.LastReconcile.IsZero() {
		out = append(out, streams.Metric{Name: "reconcile.age", Value: time.Since(s.LastReconcile).Seconds(), Unit: "s"})
	}
	return out, nil
}
