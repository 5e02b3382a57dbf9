package main

import (
	"strings"
	"testing"
	"time"
)

const sample = `goos: linux
pkg: github.com/alpha-edge/alpha/chaos
BenchmarkPutToApplied/sites=1-2   	       1	1977760007 ns/op	        13.90 ms-max	         1.540 ms-min	       200.0 ms-n	         2.319 ms-p50	        12.20 ms-p99
BenchmarkSiteIdle-2
       1	65402221780 ns/op	         0.7995 cpu%-max	         0.1996 cpu%-min	        12.00 cpu%-n	         0.6 cpu%-p50	         0.7995 cpu%-p99
--- BENCH: BenchmarkSiteIdle-2
    bench_test.go:1: a log line
pkg: github.com/alpha-edge/alpha/telemetry
BenchmarkTelemetryIngest-2   	       1	100 ns/op	 42000 msgs/s
BenchmarkPutToApplied/sites=1-2   	       1	1 ns/op	        3.5 ms-p50
`

func TestParseAndRender(t *testing.T) {
	res := parse(strings.NewReader(sample))
	if len(res) != 3 {
		t.Fatalf("parsed %d benchmarks, want 3", len(res))
	}
	// The later line for the same benchmark wins.
	if got := res[0].metrics["ms-p50"]; got != 3.5 {
		t.Fatalf("PutToApplied p50 = %v, want 3.5 (the later run)", got)
	}
	if got := res[1].metrics["cpu%-p50"]; res[1].name != "BenchmarkSiteIdle" || got != 0.6 {
		t.Fatalf("figures on the line after the name: %s cpu%%-p50 = %v", res[1].name, got)
	}
	md := string(render(res, time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), []string{"this run"}))
	for _, want := range []string{
		"2026-01-02 03:04 UTC",
		"| hub put → change applied on the node, 1 site (200 sequential puts) | 3.50 ms | – | – | – |",
		"| idle `alpha site` (leaf + agent) CPU, 5 s windows over 1 min | 0.6 % of a core | 0.799 | 0.2–0.799 | 12 |",
		"| catch-up after a 10 min outage (chaos-only: `make chaos`) | – | – | – | – |",
		"## Telemetry",
		"| BenchmarkTelemetryIngest | github.com/alpha-edge/alpha/telemetry | 100 ns/op, 42000 msgs/s |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("BENCHMARKS.md lacks %q:\n%s", want, md)
		}
	}
}
