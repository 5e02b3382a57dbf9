package telemetry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// TestBufferLimits fills the site's buffer far past its byte limit while the
// uplink is down, with health changes and events among the metrics: the
// oldest metrics are dropped, the newest kept without a gap, and every
// health change and event survives and reaches the hub.
func TestBufferLimits(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	nc, err := nats.Connect("nats://" + s.listen)
	check.NoError(t, err)
	defer nc.Close()
	ctx := context.Background()
	// The blueprint's retention narrows the leaf's default to 1 MiB.
	check.NoError(t, telemetry.ApplyRetention(ctx, nc, "s1", blueprint.Retention{MaxBytes: 1 << 20}))
	p := s.publisher("n1")
	s.proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.leaf.Connected() {
			return fmt.Errorf("leaf still connected")
		}
		return nil
	})
	const metrics, every = 20_000, 100 // ~6 MB of metrics, 6x the limit
	kept := 0
	for i := 1; i <= metrics; i++ {
		p.Publish(streams.Metric{Name: "test.seq", Value: float64(i), Layer: "host"})
		if i%every == 0 {
			p.Publish(streams.Metric{Name: "health", Value: float64(i % 2), Layer: "health", Kind: streams.KindHealth,
				Labels: map[string]string{"id": "container:web"}})
			p.Publish(streams.Metric{Name: "remediation.acted", Value: float64(i), Layer: "remediation", Kind: streams.KindEvent})
			kept += 2
		}
	}
	flush(t, p)

	site, err := jetstream.NewWithDomain(nc, "s1")
	check.NoError(t, err)
	st, err := site.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	info, err := st.Info(ctx)
	check.NoError(t, err)
	if info.State.Bytes > 1<<20 {
		t.Fatalf("site TELEMETRY holds %d bytes, limit 1 MiB", info.State.Bytes)
	}
	if info.State.Msgs == 0 || info.State.Msgs >= metrics {
		t.Fatalf("site TELEMETRY holds %d of %d metrics: nothing was dropped", info.State.Msgs, metrics)
	}
	got := readAll(t, site, streams.TelemetryStream)
	first := int(got[0].Value)
	for i, m := range got {
		if m.Kind != streams.KindMetric {
			t.Fatalf("a %s message in TELEMETRY", m.Kind)
		}
		if int(m.Value) != first+i {
			t.Fatalf("metric %d is value %v, want %d: the kept metrics are not the newest without a gap", i, m.Value, first+i)
		}
	}
	check.Equal(t, int(got[len(got)-1].Value), metrics)
	t.Logf("kept the newest %d metrics (%d..%d), dropped the oldest %d", len(got), first, metrics, first-1)

	ev := readAll(t, site, streams.EventsStream)
	check.Equal(t, len(ev), kept)

	s.proxy.Set(chaos.Up)
	s.waitHub(streams.EventsStream, uint64(kept))
	s.waitHub(streams.TelemetryStream, uint64(len(got)))
}

// TestOversizedMessageDropped: an event larger than the leaf takes (its
// max payload, 1 MiB) can never be sent. It is dropped and counted, and
// does not hold back what was published after it.
func TestOversizedMessageDropped(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	p.Publish(streams.Metric{Name: "test.seq", Value: 1, Layer: "host"})
	p.Publish(streams.Metric{Name: "remediation.acted", Layer: "remediation", Kind: streams.KindEvent, Text: strings.Repeat("x", 2<<20)})
	p.Publish(streams.Metric{Name: "remediation.acted", Value: 3, Layer: "remediation", Kind: streams.KindEvent})
	publishN(p, 4, 5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check.NoError(t, p.Flush(ctx))
	check.Equal(t, p.Stats().Dropped, uint64(1))

	site, err := jetstream.NewWithDomain(s.siteConn(), "s1")
	check.NoError(t, err)
	var values []float64
	for _, stream := range []string{streams.EventsStream, streams.TelemetryStream} {
		for _, m := range readAll(t, site, stream) {
			values = append(values, m.Value)
		}
	}
	check.Equal(t, fmt.Sprint(values), "[3 1 4 5]")
}
