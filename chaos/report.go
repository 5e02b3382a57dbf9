package chaos

import (
	"slices"
	"testing"
)

// Report adds the distribution of samples of quantity q (e.g. "ms") to a
// benchmark as metrics QUANTITY-p50, -p99, -min, -max and -n, the form
// cmd/benchtable reads. make bench runs benchmarks with -benchtime 1x, so
// each samples its figure many times within one run.
func Report(b *testing.B, q string, samples []float64) {
	b.Helper()
	if len(samples) == 0 {
		b.Fatalf("no samples of %s", q)
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	b.ReportMetric(Percentile(s, 0.5), q+"-p50")
	b.ReportMetric(Percentile(s, 0.99), q+"-p99")
	b.ReportMetric(s[0], q+"-min")
	b.ReportMetric(s[len(s)-1], q+"-max")
	b.ReportMetric(float64(len(s)), q+"-n")
}

// Percentile is the p-th (0-1) of samples sorted in ascending order.
func Percentile(sorted []float64, p float64) float64 {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}
