package agent_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// BenchmarkPutToFile measures a hub put until the file is written on the
// node, through the site leaf's mirror and the agent: 200 sequential puts.
func BenchmarkPutToFile(b *testing.B) {
	h := stack.Hub(b)
	l, _ := stack.Leaf(b, "s1", h.LeafURL(), b.TempDir())
	root := b.TempDir()
	stack.Agent(b, "s1", "n1", l.ClientURL(), root, b.TempDir())
	hubBP := stack.KV(b, h.ClientURL(), "hub", streams.BlueprintsBucket)
	file := filepath.Join(root, "etc/bench.conf")
	const samples = 200
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for i := range samples {
			want := fmt.Sprintf("n=%d\n", i)
			start := time.Now()
			if _, err := hubBP.PutString(context.Background(), "s1.n1", stack.Doc("bench", "/etc/bench.conf", want)); err != nil {
				b.Fatal(err)
			}
			stack.WaitFile(b, 10*time.Second, file, want)
			lat = append(lat, time.Since(start))
		}
	}
	ReportPercentiles(b, lat, "put-to-file")
}

// ReportPercentiles reports p50 and p99 of samples in milliseconds.
func ReportPercentiles(b *testing.B, samples []time.Duration, name string) {
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	p := func(q float64) float64 {
		return float64(samples[int(q*float64(len(samples)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(p(0.50), name+"-p50-ms")
	b.ReportMetric(p(0.99), name+"-p99-ms")
	b.ReportMetric(0, "ns/op")
}
