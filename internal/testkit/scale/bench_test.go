package scale_test

import (
	"context"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
)

// The benchmarks sample each figure many times within one run (make bench
// uses -benchtime 1x) and report it with chaos.Report for cmd/benchtable.

// largest is the fleet size of the fan-out and reconnect benchmarks:
// ALPHA_SCALE_SITES, or the largest that runs on a 2-core machine.
func largest(b *testing.B) int {
	if v := os.Getenv("ALPHA_SCALE_SITES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("ALPHA_SCALE_SITES=%q: want a positive number of sites", v)
		}
		return n
	}
	return 300
}

func msOf(ds []time.Duration) []float64 {
	out := make([]float64, len(ds))
	for i, d := range ds {
		out[i] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// fanOut starts sites and puts rounds of one blueprint per node, reporting
// put → applied at the node and put → status at the hub.
func fanOut(b *testing.B, sites, rounds int) {
	start := time.Now()
	f := scale.Start(b, scale.Options{Sites: sites})
	b.ReportMetric(time.Since(start).Seconds(), "start-s")
	reportProcess(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var applied, status []time.Duration
	for r := range rounds {
		puts := f.PutAll(ctx, "round "+strconv.Itoa(r))
		a, err := f.WaitApplied(ctx, puts)
		if err != nil {
			b.Fatal(err)
		}
		s, err := f.WaitStatus(ctx, puts)
		if err != nil {
			b.Fatal(err)
		}
		applied, status = append(applied, a...), append(status, s...)
	}
	chaos.Report(b, "applied-ms", msOf(applied))
	chaos.Report(b, "hubstatus-ms", msOf(status))
}

func reportProcess(b *testing.B) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	b.ReportMetric(float64(runtime.NumGoroutine()), "goroutines")
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		b.ReportMetric(float64(len(fds)), "fds")
	}
}

// BenchmarkFanOut is put → applied with one put per site to the largest
// fleet, 5 rounds.
func BenchmarkFanOut(b *testing.B) {
	n := largest(b)
	b.Run("sites="+strconv.Itoa(n), func(b *testing.B) { fanOut(b, n, 5) })
}
