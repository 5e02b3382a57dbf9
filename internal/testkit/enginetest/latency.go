package enginetest

import (
	"sort"
	"testing"
	"time"
)

// Latencies collects samples and reports their p50 and p99 in milliseconds.
type Latencies []time.Duration

// Report adds p50 and p99 metrics named prefix-p50-ms and prefix-p99-ms.
func (l Latencies) Report(b *testing.B, prefix string) {
	if len(l) == 0 {
		return
	}
	s := append(Latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(s)-1) + 0.5)
		return float64(s[i].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), prefix+"-p50-ms")
	b.ReportMetric(at(0.99), prefix+"-p99-ms")
	b.ReportMetric(0, "ns/op") // the loop time means nothing here
}
