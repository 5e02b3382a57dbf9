package driver

import (
	"context"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
)

// Filter wraps a driver to keep some of its changes out of its plans and to
// mark the resources concerned in its reports, so status says why they are
// not repaired (a maintenance hold, a workload a policy stopped).
type Filter struct {
	// Keep decides whether a planned change goes through.
	Keep func(now time.Time, c Change) bool
	// Mark rewrites a report; rs is nil for a driver that does not report.
	Mark func(now time.Time, rs []Resource) []Resource
	// Now is the clock, time.Now when nil.
	Now func() time.Time
}

// Wrap returns d seen through f. Watch and Report pass through, so wrapping
// hides no capability.
func (f Filter) Wrap(d Driver) Driver {
	if f.Now == nil {
		f.Now = time.Now
	}
	return &filtered{inner: d, f: f}
}

type filtered struct {
	inner Driver
	f     Filter
}

var (
	_ Watcher  = (*filtered)(nil)
	_ Reporter = (*filtered)(nil)
)

func (w *filtered) Name() string { return w.inner.Name() }

func (w *filtered) Plan(ctx context.Context, bp *blueprint.Blueprint) (Plan, error) {
	p, err := w.inner.Plan(ctx, bp)
	if w.f.Keep == nil {
		return p, err
	}
	now := w.f.Now()
	out := p[:0:0]
	for _, c := range p {
		if w.f.Keep(now, c) {
			out = append(out, c)
		}
	}
	return out, err
}

func (w *filtered) Watch(ctx context.Context, notify func(string)) error {
	if wt, ok := w.inner.(Watcher); ok {
		return wt.Watch(ctx, notify)
	}
	<-ctx.Done()
	return nil
}

func (w *filtered) Report(ctx context.Context) []Resource {
	var rs []Resource
	if r, ok := w.inner.(Reporter); ok {
		rs = r.Report(ctx)
	}
	if w.f.Mark == nil {
		return rs
	}
	return w.f.Mark(w.f.Now(), rs)
}

// Unwrap returns the wrapped driver.
func (w *filtered) Unwrap() Driver { return w.inner }
