package telemetry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func names(ms []streams.Metric) map[string]streams.Metric {
	out := map[string]streams.Metric{}
	for _, m := range ms {
		key := m.Name
		if id := m.Labels["iface"]; id != "" {
			key += "/" + id
		}
		if id := m.Labels["id"]; id != "" {
			key += "/" + id
		}
		out[key] = m
	}
	return out
}

// TestHostAndNetCollectors reads this machine through gopsutil: every
// machine has memory, load and a loopback interface that is up.
func TestHostAndNetCollectors(t *testing.T) {
	ctx := context.Background()
	ms, err := telemetry.Collect(ctx, telemetry.Host{})
	check.NoError(t, err)
	got := names(ms)
	for _, n := range []string{"cpu.percent", "memory.used", "memory.percent", "load.1"} {
		m, ok := got[n]
		if !ok {
			t.Fatalf("host collector has no %s: %v", n, ms)
		}
		check.Equal(t, m.Layer, "host")
		check.Equal(t, m.Kind, streams.KindMetric)
	}
	if got["memory.used"].Value <= 0 {
		t.Fatalf("memory.used %v", got["memory.used"].Value)
	}
	ms, err = telemetry.Collect(ctx, telemetry.Net{})
	check.NoError(t, err)
	got = names(ms)
	if m, ok := got["iface.up/lo"]; !ok || m.Value != 1 {
		t.Fatalf("loopback link state missing or down: %v", ms)
	}
	if _, ok := got["iface.rx_bytes/lo"]; !ok {
		t.Fatal("loopback counters missing")
	}
}

// TestResourceAndAgentCollectors turns driver reports and the engine status
// into metrics of the right layer.
func TestResourceAndAgentCollectors(t *testing.T) {
	ctx := context.Background()
	list := func(context.Context) []driver.Resource {
		return []driver.Resource{
			{ID: "container:web", State: "running", Health: 1, Repairs: 2},
			{ID: "unit:meter.service", State: "failed", Health: 0},
		}
	}
	ms, err := telemetry.Collect(ctx, telemetry.Resources{Layer: "containers", List: list})
	check.NoError(t, err)
	got := names(ms)
	check.Equal(t, len(ms), 3)
	check.Equal(t, got["resource.repairs/container:web"].Value, 2.0)
	check.Equal(t, got["resource.up/container:web"].Layer, "containers")
	ms, err = telemetry.Collect(ctx, telemetry.Resources{Layer: "units", List: list})
	check.NoError(t, err)
	got = names(ms)
	check.Equal(t, got["resource.up/unit:meter.service"].Value, 0.0)
	check.Equal(t, got["resource.health/unit:meter.service"].Labels["state"], "failed")

	ms, err = telemetry.Collect(ctx, telemetry.Agent{Status: func() engine.Status {
		return engine.Status{NodeStatus: streams.NodeStatus{Phase: engine.PhaseConverged, Repairs: 4, Errors: []string{"x"}, LastReconcile: time.Now()}}
	}})
	check.NoError(t, err)
	got = names(ms)
	check.Equal(t, got["reconcile.converged"].Value, 1.0)
	check.Equal(t, got["reconcile.repairs"].Value, 4.0)
	check.Equal(t, got["reconcile.errors"].Value, 1.0)
}

// TestSchedule: the blueprint picks collectors and intervals.
func TestSchedule(t *testing.T) {
	all := []telemetry.Collector{telemetry.Host{}, telemetry.Sensors{}, telemetry.Net{}}
	check.Equal(t, len(telemetry.Schedule(nil, all...)), 3)
	s := telemetry.Schedule(&blueprint.Telemetry{Collectors: []blueprint.Collector{
		{Name: "sensors", Interval: blueprint.Duration{Duration: 5 * time.Second}}, {Name: "net"}}}, all...)
	check.Equal(t, len(s), 2)
	check.Equal(t, s[0].Name(), "sensors")
	check.Equal(t, s[0].Every, 5*time.Second)
	check.Equal(t, s[1].Every, telemetry.DefaultInterval)
}

// TestRetriesNeverDuplicate sends the same messages twice under the same
// ids, as a publisher does after a lost ack: the site stream keeps one copy,
// and the link collector sees them waiting for the uplink.
func TestRetriesNeverDuplicate(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	s.proxy.Set(chaos.Cut)
	p1 := s.publisher("n1")
	publishN(p1, 1, 1000)
	flush(t, p1)
	p2 := s.publisher("n1") // same node and boot id: the same ids again
	publishN(p2, 1, 1000)
	flush(t, p2)
	check.Equal(t, p2.Stats().Published, uint64(1000))
	nc, err := nats.Connect("nats://" + s.listen)
	check.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, "s1")
	check.NoError(t, err)
	exactly(t, readAll(t, js, streams.TelemetryStream), "n1", 1000)

	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		ms, err := telemetry.Collect(context.Background(), telemetry.Link{Conn: nc, Site: "s1", Timeout: 200 * time.Millisecond})
		if err != nil {
			return err
		}
		got := names(ms)
		if got["uplink.connected"].Value != 0 {
			return fmt.Errorf("link reported up while cut")
		}
		for _, m := range ms {
			if m.Name == "uplink.pending" && m.Labels["stream"] == streams.TelemetryStream && m.Value != 1000 {
				return fmt.Errorf("pending %v, want 1000", m.Value)
			}
		}
		return nil
	})
	s.proxy.Set(chaos.Up)
	s.waitHub(streams.TelemetryStream, 1000)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		ms, err := telemetry.Collect(context.Background(), telemetry.Link{Conn: nc, Site: "s1"})
		if err != nil {
			return err
		}
		got := names(ms)
		if got["uplink.connected"].Value != 1 {
			return fmt.Errorf("link reported down after restore")
		}
		return nil
	})
}
