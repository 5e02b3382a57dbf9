package rollout_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/rollout"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
)

// BenchmarkRollout1000 rolls one fleet revision out to 1,000 simulated
// nodes (100 sites of 10, the scale harness's lightweight agents behind real
// site leaves) in batches of 10% with a gate of 0 s, through the rollout
// controller of an `alpha hub` process: the time from `rollout start` to
// Completed, and the hub's CPU over it.
func BenchmarkRollout1000(b *testing.B) {
	bin := os.Getenv("ALPHA_BIN")
	if bin == "" {
		b.Skip("ALPHA_BIN is not set: the hub runs as its own process (make bench sets it)")
	}
	f := scale.Start(b, scale.Options{Sites: 100, Nodes: 10, Binary: bin, Telemetry: -1})
	_, js := f.Hub.Admin(scale.Tenant)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var nodes []inventory.Node
	for _, n := range f.Nodes() {
		if _, err := inventory.SetLabels(ctx, js, n.Key(), map[string]string{"role": "meter"}, nil); err != nil {
			b.Fatal(err)
		}
		nodes = append(nodes, inventory.Node{Site: n.Site.ID, Node: n.ID, Labels: map[string]string{"role": "meter"}})
	}
	var batches string
	for p := 10; p <= 100; p += 10 {
		batches += fmt.Sprintf("%q,", fmt.Sprintf("%d%%", p))
	}
	doc := fmt.Sprintf(`apiVersion: alpha/v1
kind: Fleet
metadata: {name: bench}
spec:
  selector: role=meter
  rollout: {batches: [%s], minHealth: 0, deadline: 1m}
  template: |
    apiVersion: alpha/v1
    kind: Blueprint
    metadata: {name: bench}
    spec:
      files:
        - path: /etc/bench.conf
          content: "{{ .Site }}.{{ .Node }}\n"
`, batches[:len(batches)-1])
	fl, err := fleet.Parse([]byte(doc), ".")
	if err != nil {
		b.Fatal(err)
	}
	seed, err := os.ReadFile(f.Hub.Op.PublisherSeed(scale.Tenant))
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	meta, staged, err := fl.Build(nodes, seed, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	if err := fleet.Stage(ctx, js, meta, staged); err != nil {
		b.Fatal(err)
	}
	chaos.Report(b, "apply-s", []float64{time.Since(t0).Seconds()})
	pid, err := f.HubPID()
	if err != nil {
		b.Fatal(err)
	}
	before, err := chaos.ProcUsage(pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := rollout.Start(ctx, js, "bench", start); err != nil {
		b.Fatal(err)
	}
	for {
		r, _, err := rollout.Load(ctx, js, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if r.State == rollout.Completed {
			if c := r.Count(nil); c[rollout.NodeGood] != len(nodes) {
				b.Fatalf("completed with %v, want %d good", c, len(nodes))
			}
			break
		}
		if r.Done() {
			b.Fatalf("rollout %s: %s", r.State, r.Reason)
		}
		select {
		case <-ctx.Done():
			b.Fatalf("rollout still %s at batch %d: %v", r.State, r.Batch+1, r.Count(nil))
		case <-time.After(100 * time.Millisecond):
		}
	}
	took := time.Since(start)
	after, err := chaos.ProcUsage(pid)
	if err != nil {
		b.Fatal(err)
	}
	chaos.Report(b, "rollout-s", []float64{took.Seconds()})
	chaos.Report(b, "hubCpu%", []float64{100 * float64(after.CPU-before.CPU) / float64(took)})
	b.ReportMetric(float64(len(nodes)), "nodes")
}
