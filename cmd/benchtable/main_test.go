package main

import (
	"os"
	"path/filepath"
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

// A run replaces the generated tables and keeps the hand-written sections
// below the marker byte for byte; a file without the marker is left alone.
func TestRunKeepsHandWrittenSections(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "bench.txt")
	if err := os.WriteFile(in, []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "BENCHMARKS.md")
	hand := marker + "\n\n## Runs by hand\n\n| 1,000 sites | 29.2 s |\n"
	if err := os.WriteFile(out, []byte("# Benchmarks\n\nold table | 999 ms\n\n"+hand), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(out, []string{in}, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	got := string(b)
	if !strings.HasSuffix(got, "\n"+hand) || strings.Count(got, marker) != 1 {
		t.Fatalf("hand-written part not kept once at the end:\n%s", got)
	}
	if strings.Contains(got, "999 ms") || !strings.Contains(got, "| 3.50 ms |") {
		t.Fatalf("generated part not replaced:\n%s", got)
	}

	bare := filepath.Join(dir, "NOMARKER.md")
	orig := "# Benchmarks\n\nsomebody's analysis\n"
	if err := os.WriteFile(bare, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(bare, []string{in}, nil)
	if err == nil || !strings.Contains(err.Error(), "has no line") {
		t.Fatalf("a file without the marker: err = %v, want a refusal naming the marker", err)
	}
	if b, _ := os.ReadFile(bare); string(b) != orig {
		t.Fatalf("a refused file was changed:\n%s", b)
	}

	fresh := filepath.Join(dir, "NEW.md")
	if err := run(fresh, []string{in}, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(fresh); !strings.HasSuffix(string(b), marker+"\n") {
		t.Fatalf("a new file does not end with the marker:\n%s", b)
	}
}
