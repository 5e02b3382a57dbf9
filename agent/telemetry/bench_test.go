package telemetry_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

const benchMsgs = 50_000

// BenchmarkSitePublish measures the sustained rate of the telemetry
// publisher at a site leaf (every message acked, with its Nats-Msg-Id)
// beside a raw JetStream async publish of the same messages on the same
// leaf in the same run; the ratio is the publisher's cost.
func BenchmarkSitePublish(b *testing.B) {
	s := newSite(b, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	nc, err := nats.Connect("nats://" + s.listen)
	check.NoError(b, err)
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, "s1", jetstream.WithPublishAsyncMaxPending(2048))
	check.NoError(b, err)
	m := streams.Metric{Name: "test.seq", Value: 1, Layer: "host", Site: "s1", Node: "raw", Kind: streams.KindMetric, TS: time.Now()}
	var ours, raw time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		publishN(p, 1, benchMsgs)
		flush(b, p)
		ours += time.Since(start)

		start = time.Now()
		for j := 0; j < benchMsgs; j++ {
			m.ID = fmt.Sprintf("raw.%d.%d", i, j)
			data, _ := json.Marshal(m)
			msg := nats.NewMsg(m.Subject())
			msg.Data = data
			msg.Header.Set(nats.MsgIdHdr, m.ID)
			if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(60 * time.Second):
			b.Fatal("raw publishes not acked")
		}
		raw += time.Since(start)
	}
	n := float64(b.N * benchMsgs)
	oursRate, rawRate := n/ours.Seconds(), n/raw.Seconds()
	b.ReportMetric(oursRate, "publisher-msgs/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(oursRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkDrain measures how fast a site's backlog of 100,000 messages,
// buffered while the uplink was cut, reaches the hub once it returns.
func BenchmarkDrain(b *testing.B) {
	s := newSite(b, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	var total time.Duration
	for i := 0; i < b.N; i++ {
		s.proxy.Set(chaos.Cut)
		check.For(b, 10*time.Second, 10*time.Millisecond, func() error {
			if s.leaf.Connected() {
				return fmt.Errorf("leaf still connected")
			}
			return nil
		})
		publishN(p, i*outage+1, (i+1)*outage)
		flush(b, p)
		start := time.Now()
		s.proxy.Set(chaos.Up)
		want := uint64((i + 1) * outage)
		for s.hubMsgs(streams.TelemetryStream) < want {
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("drain stalled at %d of %d", s.hubMsgs(streams.TelemetryStream), want)
			}
			time.Sleep(5 * time.Millisecond) // polling granularity of the measurement
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(b.N*outage)/total.Seconds(), "drain-msgs/s")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/outage")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkHostCollectors is the cost of one pass of the host, sensors and
// net collectors on this machine: what every agent pays per interval.
func BenchmarkHostCollectors(b *testing.B) {
	ctx := b.Context()
	var n int
	for i := 0; i < b.N; i++ {
		for _, c := range []telemetry.Collector{telemetry.Host{}, telemetry.Sensors{}, telemetry.Net{}} {
			ms, err := c.Collect(ctx)
			if err != nil {
				b.Fatalf("%s: %v", c.Name(), err)
			}
			n += len(ms)
		}
	}
	b.ReportMetric(float64(n)/float64(b.N), "metrics/pass")
}
