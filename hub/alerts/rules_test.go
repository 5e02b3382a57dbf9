package alerts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// TestNodeRules feeds status documents and events, as they reach the hub,
// into the health, permission, drift and escalation rules: each fires for
// its node, an event under another site's subject counts for nobody, and
// the status rules resolve when the node recovers.
func TestNodeRules(t *testing.T) {
	_, nc := hubtest.Start(t)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	status, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.StatusBucket})
	check.NoError(t, err)
	events, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: streams.EventsStream, Subjects: []string{streams.EventsRoot + ".>"}})
	check.NoError(t, err)

	put := func(ns streams.NodeStatus) {
		b, _ := json.Marshal(ns)
		_, err := status.Put(ctx, streams.Key(ns.Site, ns.Node), b)
		check.NoError(t, err)
	}
	pub := func(subject string, v any) {
		b, _ := json.Marshal(v)
		_, err := js.Publish(ctx, subject, b)
		check.NoError(t, err)
	}
	low, ok := 0.2, 1.0
	put(streams.NodeStatus{Site: "s1", Node: "n1", Phase: "Converged", Health: &low,
		Errors: []string{"permission denied: publish telemetry.s1.n9.host.cpu"}})
	put(streams.NodeStatus{Site: "s1", Node: "n2", Phase: "Converged", Health: &ok})
	drift := map[string]string{"site": "s1", "node": "n1", "resource": "file:/etc/x", "op": "write"}
	pub("events.s1.n1.drift", drift)
	pub("events.s1.n1.drift", drift)
	// Another site's box writing a document that names s1: not s1's drift.
	for range 3 {
		pub("events.s2.n1.drift", map[string]string{"site": "s1", "node": "n2", "resource": "file:/etc/y"})
	}
	pub("events.s1.n2.remediation.remediation.escalated", streams.Metric{Name: "remediation.escalated", Site: "s1", Node: "n2",
		Layer: "remediation", Kind: streams.KindEvent, Labels: map[string]string{"policy": "restart-web"}, Text: "3 restarts in 10m"})

	cfg := alerts.Config{Interval: alerts.Duration(100 * time.Millisecond), Rules: []alerts.Rule{
		{Kind: alerts.KindHealth, Below: 0.5, For: alerts.Duration(500 * time.Millisecond)},
		{Kind: alerts.KindPermission},
		{Kind: alerts.KindDrift, Count: 2, Within: alerts.Duration(time.Hour)},
		{Kind: alerts.KindEscalated, For: alerts.Duration(time.Hour)},
	}}
	start := time.Now()
	eng, err := alerts.Start(ctx, alerts.Options{Config: cfg, Tenants: []alerts.Tenant{{JS: js}}, Log: stack.Log()})
	check.NoError(t, err)
	t.Cleanup(eng.Stop)

	want := []string{"drift s1.n1 file:/etc/x", "escalated s1.n2 restart-web", "health s1.n1 ", "permission s1.n1 "}
	var firing map[string]streams.Alert
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		firing, err = alerts.Firing(ctx, js)
		if got := describe(firing); err != nil || got != strings.Join(want, "|") {
			return fmt.Errorf("firing %q (%v), want %q", got, err, strings.Join(want, "|"))
		}
		return nil
	})
	// Tens of evaluations went by; their consumers are gone, not piling
	// up against the tenant's consumer limit. (An evaluation's ordered
	// consumer is deleted in the background: a couple may still be on
	// their way out.)
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		info, err := events.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Consumers > 2 {
			return fmt.Errorf("EVENTS has %d consumers after the evaluations", info.State.Consumers)
		}
		return nil
	})
	for _, a := range firing {
		if a.Name == "health" && a.StartsAt.Sub(start) < 500*time.Millisecond {
			t.Fatalf("health fired %v after it was low, before the rule's 500ms", a.StartsAt.Sub(start))
		}
	}

	put(streams.NodeStatus{Site: "s1", Node: "n1", Phase: "Converged", Health: &ok})
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		firing, err = alerts.Firing(ctx, js)
		if got := describe(firing); err != nil || got != strings.Join(want[:2], "|") {
			return fmt.Errorf("firing %q (%v), want %q", got, err, strings.Join(want[:2], "|"))
		}
		return nil
	})
}

func describe(f map[string]streams.Alert) string {
	var out []string
	for _, a := range f {
		out = append(out, a.Name+" "+a.Site+"."+a.Node+" "+a.Resource)
	}
	sort.Strings(out)
	return strings.Join(out, "|")
}

// TestOnlyTheActiveMemberEvaluates: a hub that is not the cluster's
// JetStream leader fires nothing; once it leads it starts from the bucket,
// so an alert another member fired resolves here instead of lingering.
func TestOnlyTheActiveMemberEvaluates(t *testing.T) {
	_, nc := hubtest.Start(t)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	status, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.StatusBucket})
	check.NoError(t, err)
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: streams.EventsStream, Subjects: []string{streams.EventsRoot + ".>"}})
	check.NoError(t, err)
	b, _ := json.Marshal(streams.NodeStatus{Site: "s1", Node: "n1", Errors: []string{"permission denied: x"}})
	_, err = status.Put(ctx, "s1.n1", b)
	check.NoError(t, err)

	var leader atomic.Bool
	cfg := alerts.Config{Interval: alerts.Duration(50 * time.Millisecond), Rules: []alerts.Rule{{Kind: alerts.KindPermission}}}
	eng, err := alerts.Start(ctx, alerts.Options{Config: cfg, Tenants: []alerts.Tenant{{JS: js}}, Log: stack.Log(), Active: leader.Load})
	check.NoError(t, err)
	t.Cleanup(eng.Stop)
	time.Sleep(300 * time.Millisecond) // evaluations that must not happen
	if f, _ := alerts.Firing(ctx, js); len(f) != 0 {
		t.Fatalf("a member that does not lead fired %v", f)
	}
	// Another member fired an alert that no longer holds.
	other := streams.Alert{Name: "permission", Kind: "permission", Site: "s9", Node: "n9", State: streams.AlertFiring, StartsAt: time.Now()}
	ob, _ := json.Marshal(other)
	kv, err := js.CreateKeyValue(ctx, alerts.BucketConfig)
	check.NoError(t, err)
	_, err = kv.Put(ctx, alerts.Key(other), ob)
	check.NoError(t, err)
	leader.Store(true)
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		f, err := alerts.Firing(ctx, js)
		if got := describe(f); err != nil || got != "permission s1.n1 " {
			return fmt.Errorf("firing %q (%v)", got, err)
		}
		return nil
	})
}
