package ui_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/rollout"
	"github.com/alpha-edge/alpha/hub/ui"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	check.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return string(b)
}

// TestPagesWithoutOperatorMode renders the pages from a hub's buckets as
// they are: the phase filter, rollouts only once the bucket exists, and a
// node page that says there are no logs while the hub has no LOGS stream.
func TestPagesWithoutOperatorMode(t *testing.T) {
	_, nc := hubtest.Start(t)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	status, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.StatusBucket})
	check.NoError(t, err)
	for _, ns := range []streams.NodeStatus{
		{Site: "s1", Node: "n1", Phase: "Converged", Blueprint: "web", Reported: time.Now()},
		{Site: "s1", Node: "n2", Phase: "Degraded", Blueprint: "web", Reported: time.Now(), Errors: []string{"files: <b>bad</b>"}},
	} {
		b, _ := json.Marshal(ns)
		_, err := status.Put(ctx, streams.Key(ns.Site, ns.Node), b)
		check.NoError(t, err)
	}
	h, err := ui.New(ui.Config{Tenants: []ui.Tenant{{JS: js}}, Log: stack.Log()})
	check.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	page := get(t, srv.URL+"/?phase=Degraded")
	if !strings.Contains(page, `data-node="s1.n2" data-phase="Degraded"`) || strings.Contains(page, `data-node="s1.n1"`) {
		t.Fatalf("phase filter Degraded:\n%s", page)
	}
	if strings.Contains(page, "Rollouts") {
		t.Fatal("rollouts shown while the hub has no rollouts bucket")
	}
	if frag := get(t, srv.URL+"/?fragment=1"); strings.Contains(frag, "<html") || !strings.Contains(frag, `data-node="s1.n1"`) {
		t.Fatalf("fragment:\n%s", frag)
	}

	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.RolloutsBucket})
	check.NoError(t, err)
	r := rollout.Rollout{Fleet: "web", Generation: "g7", State: rollout.Running, Batches: [][]string{{"s1.n1"}, {"s1.n2"}},
		Nodes: map[string]*rollout.Node{"s1.n1": {Phase: rollout.NodeGood}, "s1.n2": {Batch: 1, Phase: rollout.NodeWaiting}}}
	b, _ := json.Marshal(r)
	_, err = kv.Put(ctx, "web", b)
	check.NoError(t, err)
	page = get(t, srv.URL+"/")
	for _, want := range []string{`data-fleet="web" data-state="Running"`, "g7", "1 of 2", "1 Good, 1 Waiting"} {
		if !strings.Contains(page, want) {
			t.Fatalf("fleet page lacks %q:\n%s", want, page)
		}
	}

	node := get(t, srv.URL+"/node/s1/n2")
	for _, want := range []string{"no logs: the hub has no LOGS stream", "error: files: &lt;b&gt;bad&lt;/b&gt;", `id="node-phase">Degraded`} {
		if !strings.Contains(node, want) {
			t.Fatalf("node page lacks %q:\n%s", want, node)
		}
	}
}
