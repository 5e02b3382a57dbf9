package cloud_test

import (
	"fmt"
	"io"
	"log/slog"
	"sort"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// BenchmarkVariableChangeToOutputs measures, with real Terraform, how long a
// variable change takes from the blueprint put to the new output published
// (init, plan, show, apply, output, status), and how long a re-plan that
// finds nothing takes.
func BenchmarkVariableChangeToOutputs(b *testing.B) {
	check.NeedCommand(b, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh)")
	const rounds = 12
	var applyLat, replanLat []time.Duration
	for range b.N {
		js, bps := hub(b)
		dir := b.TempDir()
		r := start(b, js, func(c *cloud.Config) {
			c.Replan = 200 * time.Millisecond
			c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		})
		for i := range rounds {
			name := fmt.Sprintf("v%d", i)
			doc := cloudDoc([]string{bucketConfig("logs", name, dir, "", "0")}, nil)
			t0 := time.Now()
			_, err := bps.Put(b.Context(), "s1.n1", []byte(doc))
			check.NoError(b, err)
			check.For(b, 60*time.Second, 5*time.Millisecond, func() error {
				st, err := status(js, "s1.n1.logs")
				if err != nil {
					return err
				}
				if st.Outputs["bucket_name"] != "alpha-"+name {
					return fmt.Errorf("outputs %v", st.Outputs)
				}
				return nil
			})
			applyLat = append(applyLat, time.Since(t0))
		}
		// Re-plans: time between plan counter ticks while nothing changes,
		// minus the configured interval, is the cost of one no-op pass.
		p0, t0 := r.Stats().Plans, time.Now()
		check.For(b, 60*time.Second, 5*time.Millisecond, func() error {
			if r.Stats().Plans < p0+rounds {
				return fmt.Errorf("%d re-plans", r.Stats().Plans-p0)
			}
			return nil
		})
		per := time.Since(t0) / rounds
		replanLat = append(replanLat, per-200*time.Millisecond)
		if r.Stats().Applies != rounds {
			b.Fatalf("applies %d, want %d", r.Stats().Applies, rounds)
		}
	}
	b.ReportMetric(pct(applyLat, 50).Seconds()*1000, "apply-p50-ms")
	b.ReportMetric(pct(applyLat, 99).Seconds()*1000, "apply-p99-ms")
	b.ReportMetric(pct(replanLat, 50).Seconds()*1000, "noop-replan-ms")
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)*p/100]
}
