package telemetry_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// benchMsgs is how many messages one phase of BenchmarkSitePublish sends,
// benchRounds how many phases each side has in one iteration.
const benchMsgs, benchRounds = 6_250, 8

// BenchmarkSitePublish measures the sustained rate of the telemetry
// publisher at a site leaf (every message acked, with its Nats-Msg-Id)
// beside a raw JetStream async publish of the same messages on the same
// leaf in the same run; the ratio is the publisher's cost.
//
// Both sides send the same messages: the same name, layer and labels map, a
// node name and an id of the same length, a fresh UTC timestamp each, so
// the same subject length and payload size; both count from the first
// publish to the last ack. One iteration is benchRounds rounds of one
// phase each, alternating which goes first, so the load of a shared
// machine and a drift during the run (a growing heap, a store filling up)
// weigh on both alike; between phases the hub catches up with the site
// (untimed), so neither pays for sourcing the other's messages. The ratio
// is the median of the rounds' ratios: a burst of other work on the
// machine during one phase moves it little. cpu-ratio compares the CPU
// time this process (publisher, leaf and hub alike) spent per phase, the
// hub's catching up included: it hardly depends on the machine's load.
// The hub's telemetry quota (256 MiB in these tests) bounds a run to about
// five iterations.
func BenchmarkSitePublish(b *testing.B) {
	s := newSite(b, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	js, err := jetstream.NewWithDomain(s.siteConn(), "s1", jetstream.WithPublishAsyncMaxPending(2048))
	check.NoError(b, err)
	labels := map[string]string{"k": "v"}
	var stored uint64
	seq := map[bool]int{} // last id sent, per side
	var oursCPU, rawCPU time.Duration
	phase := func(publisher bool) time.Duration {
		first := seq[publisher] + 1
		seq[publisher] += benchMsgs
		cpu := cpuTime()
		start := time.Now()
		if publisher {
			for i := first; i <= seq[publisher]; i++ {
				p.Publish(streams.Metric{Name: "test.seq", Value: float64(i), Layer: "host", Labels: labels})
			}
			flush(b, p)
		} else {
			rawPublish(b, js, labels, first, seq[publisher])
		}
		took := time.Since(start)
		stored += benchMsgs
		s.waitHub(streams.TelemetryStream, stored)
		if cpu = cpuTime() - cpu; publisher {
			oursCPU += cpu
		} else {
			rawCPU += cpu
		}
		return took
	}
	var ours, raw time.Duration
	var ratios []float64
	for i := 0; i < b.N; i++ {
		for round := range benchRounds {
			first := round%2 == 0
			t1, t2 := phase(first), phase(!first)
			if !first {
				t1, t2 = t2, t1
			}
			ours, raw = ours+t1, raw+t2
			ratios = append(ratios, t2.Seconds()/t1.Seconds())
		}
	}
	n := float64(b.N * benchRounds * benchMsgs)
	oursRate, rawRate := n/ours.Seconds(), n/raw.Seconds()
	slices.Sort(ratios)
	b.Logf("round ratios: %.2f", ratios)
	b.ReportMetric(oursRate, "publisher-msgs/s")
	b.ReportMetric(rawRate, "raw-msgs/s")
	b.ReportMetric(ratios[len(ratios)/2], "ratio")
	b.ReportMetric(rawCPU.Seconds()/oursCPU.Seconds(), "cpu-ratio")
	b.ReportMetric(0, "ns/op")
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// rawPublish sends ids r1.b1.from..to as a plain JetStream client would
// (node r1: as long as the publisher's n1) and waits for every ack.
func rawPublish(b *testing.B, js jetstream.JetStream, labels map[string]string, from, to int) {
	m := streams.Metric{Name: "test.seq", Layer: "host", Labels: labels, Site: "s1", Node: "r1", Kind: streams.KindMetric}
	for i := from; i <= to; i++ {
		m.Value, m.TS, m.ID = float64(i), time.Now().UTC(), "r1.b1."+strconv.Itoa(i)
		data, err := json.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
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
