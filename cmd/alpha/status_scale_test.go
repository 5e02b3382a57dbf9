package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// statusHub is a hub whose status bucket takes puts directly (it normally
// only sources from sites), so a test can write thousands of node
// documents without running thousands of agents.
func statusHub(t testing.TB) jetstream.JetStream {
	t.Helper()
	h := stack.Hub(t)
	nc, err := nats.Connect(h.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	check.NoError(t, err)
	ctx := context.Background()
	s, err := js.Stream(ctx, streams.StatusStream)
	check.NoError(t, err)
	info, err := s.Info(ctx)
	check.NoError(t, err)
	cfg := info.Config
	cfg.Subjects = append(cfg.Subjects, "$KV."+streams.StatusBucket+".>")
	_, err = js.UpdateStream(ctx, cfg)
	check.NoError(t, err)
	return js
}

// putStatus writes node documents and blueprint keys with async publishes,
// every ack checked.
func putStatus(t testing.TB, js jetstream.JetStream, docs []streams.NodeStatus, blueprints []string) {
	t.Helper()
	var acks []jetstream.PubAckFuture
	for _, d := range docs {
		b, _ := json.Marshal(d)
		f, err := js.PublishAsync("$KV."+streams.StatusBucket+"."+streams.Key(d.Site, d.Node), b)
		check.NoError(t, err)
		acks = append(acks, f)
	}
	for _, k := range blueprints {
		f, err := js.PublishAsync("$KV."+streams.BlueprintsBucket+"."+k, []byte("blueprint"))
		check.NoError(t, err)
		acks = append(acks, f)
	}
	prodtest.Acked(t, acks)
}

// TestStatusFilters: --site, --phase, --stale and -l narrow the table, and the
// summary line counts the phases (never-reported nodes included) and names
// the sites none of whose nodes reported lately.
func TestStatusFilters(t *testing.T) {
	js := statusHub(t)
	now := time.Now().UTC()
	putStatus(t, js, []streams.NodeStatus{
		{Site: "s1", Node: "n1", Phase: "Converged", Reported: now},
		{Site: "s1", Node: "n2", Phase: "Failed", Reported: now},
		{Site: "s2", Node: "n1", Phase: "Converged", Reported: now.Add(-2 * time.Minute)},
	}, []string{"s1.n1", "s1.n2", "s2.n1", "s3.n1"})
	ctx := context.Background()
	_, err := inventory.SetLabels(ctx, js, "s1.n2", map[string]string{"role": "pos"}, nil)
	check.NoError(t, err)
	_, err = inventory.SetLabels(ctx, js, "s3.n1", map[string]string{"role": "pos"}, nil)
	check.NoError(t, err)
	sel := func(s string) inventory.Selector {
		sel, err := inventory.ParseSelector(s)
		check.NoError(t, err)
		return sel
	}
	for _, c := range []struct {
		name    string
		f       statusFilter
		want    []string // site.node rows, in order
		summary string
	}{
		{"all", statusFilter{}, []string{"s1.n1", "s1.n2", "s2.n1", "s3.n1"},
			"4 nodes in 3 sites: Converged 2, Failed 1, NeverReported 1; 2 sites stale (no report for 30s): s2 s3"},
		{"site", statusFilter{site: "s1"}, []string{"s1.n1", "s1.n2"},
			"2 nodes in 1 sites: Converged 1, Failed 1; 0 sites stale (no report for 30s)"},
		{"phase", statusFilter{phase: "failed"}, []string{"s1.n2"}, ""},
		{"never", statusFilter{phase: "NeverReported"}, []string{"s3.n1"}, ""},
		{"stale", statusFilter{stale: time.Minute}, []string{"s2.n1", "s3.n1"},
			"4 nodes in 3 sites: Converged 2, Failed 1, NeverReported 1; 2 sites stale (no report for 1m0s): s2 s3"},
		{"site and stale", statusFilter{site: "s2", stale: time.Minute}, []string{"s2.n1"}, ""},
		{"label", statusFilter{sel: sel("role=pos")}, []string{"s1.n2", "s3.n1"},
			"2 nodes in 2 sites: Failed 1, NeverReported 1; 1 sites stale (no report for 30s): s3"},
		{"label and site", statusFilter{sel: sel("role=pos"), site: "s1"}, []string{"s1.n2"}, ""},
		{"not label", statusFilter{sel: sel("role!=pos"), site: "s1"}, []string{"s1.n1"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep, err := collect(ctx, js, c.f)
			check.NoError(t, err)
			var out bytes.Buffer
			rep.print(&out, false, time.Now())
			var got []string
			for _, line := range strings.Split(out.String(), "\n")[1:] {
				f := strings.Fields(line)
				if len(f) > 2 && strings.HasPrefix(f[0], "s") && !strings.Contains(line, "nodes in") {
					got = append(got, f[0]+"."+f[1])
				}
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("rows %v, want %v:\n%s", got, c.want, out.String())
			}
			if c.summary != "" && rep.summary != c.summary {
				t.Errorf("summary\n %q, want\n %q", rep.summary, c.summary)
			}
			if !strings.Contains(out.String(), rep.summary) {
				t.Errorf("summary not printed:\n%s", out.String())
			}
		})
	}
}

// BenchmarkStatus10k is alpha status against 10,000 node documents (1,000
// sites of 10 nodes) written into the hub's status bucket: one site
// (--site), and the summary over all of them.
func BenchmarkStatus10k(b *testing.B) {
	js := statusHub(b)
	now := time.Now().UTC()
	var docs []streams.NodeStatus
	var keys []string
	for s := range 1000 {
		for n := range 10 {
			d := streams.NodeStatus{Site: fmt.Sprintf("s%04d", s), Node: fmt.Sprintf("n%d", n), Phase: "Converged", Reported: now,
				AppliedRevision: 1, Blueprint: "web"}
			docs = append(docs, d)
			keys = append(keys, streams.Key(d.Site, d.Node))
		}
	}
	putStatus(b, js, docs, keys)
	ctx := context.Background()
	measure := func(f statusFilter, want int) []float64 {
		var ms []float64
		for range 10 {
			start := time.Now()
			rep, err := collect(ctx, js, f)
			if err != nil {
				b.Fatal(err)
			}
			var out bytes.Buffer
			rep.print(&out, false, time.Now())
			ms = append(ms, float64(time.Since(start))/float64(time.Millisecond))
			if len(rep.nodes) != want {
				b.Fatalf("%+v: %d nodes, want %d", f, len(rep.nodes), want)
			}
		}
		return ms
	}
	chaos.Report(b, "site-ms", measure(statusFilter{site: "s0500"}, 10))
	chaos.Report(b, "all-ms", measure(statusFilter{}, 10000))
	chaos.Report(b, "stale-ms", measure(statusFilter{stale: time.Hour}, 0))
}
