package chaos_test

import (
	"testing"
	"time"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/stack"
)

// BenchmarkCatchUp45s measures, after a 45 s cut, the time from restoring
// the link until an update made during the cut is applied on the node.
func BenchmarkCatchUp45s(b *testing.B) {
	var total time.Duration
	for range b.N {
		s := newSite(b)
		s.put("v=1\n")
		stack.WaitFile(b, 10*time.Second, s.file(), "v=1\n")
		s.proxy.Set(chaos.Cut)
		s.put("v=2\n")
		outage(45 * time.Second)
		total += s.catchUp("v=2\n")
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "catch-up-45s-ms")
	b.ReportMetric(0, "ns/op")
}
