package metrics_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/metrics"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

var endpointRE = regexp.MustCompile(`msg="prometheus endpoint".* url=(http://127\.0\.0\.1:[1-9][0-9]*/metrics)`)

func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(resp.Body)
}

// value finds the sample of family with all the given labels.
func value(fams map[string]*dto.MetricFamily, family string, labels map[string]string) (float64, error) {
	f := fams[family]
	if f == nil {
		return 0, fmt.Errorf("no family %s", family)
	}
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range labels {
			if have[k] != v {
				continue next
			}
		}
		switch f.GetType() {
		case dto.MetricType_GAUGE:
			return m.GetGauge().GetValue(), nil
		case dto.MetricType_COUNTER:
			return m.GetCounter().GetValue(), nil
		}
		return 0, fmt.Errorf("%s has type %s", family, f.GetType())
	}
	return 0, fmt.Errorf("no %s with labels %v", family, labels)
}

// stack starts a hub and a site leaf s1 linked to it, and a telemetry
// publisher of node n1 at the leaf; it returns the hub and its JetStream.
func stack(t *testing.T) (*hub.Hub, jetstream.JetStream, *telemetry.Publisher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h, err := hub.Start(ctx, hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: quiet})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	l, err := leaf.Start(ctx, leaf.Config{Site: "s1", HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Log: quiet})
	check.NoError(t, err)
	t.Cleanup(l.Shutdown)
	check.For(t, 20*time.Second, 10*time.Millisecond, func() error {
		if !l.Synced() {
			return fmt.Errorf("leaf not synced")
		}
		return nil
	})
	hnc, err := h.Connect()
	check.NoError(t, err)
	t.Cleanup(hnc.Close)
	hjs, err := jetstream.New(hnc)
	check.NoError(t, err)
	nc, err := nats.Connect(l.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	p, err := telemetry.NewPublisher(telemetry.PublisherConfig{Conn: nc, Site: "s1", Node: "n1", Log: quiet})
	check.NoError(t, err)
	go p.Run(ctx)
	return h, hjs, p
}

// written parses what exp writes.
func written(exp *metrics.Exporter) (map[string]*dto.MetricFamily, error) {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(exp.Write(pw)) }()
	parser := expfmt.NewTextParser(model.LegacyValidation)
	return parser.TextToMetricFamilies(pr)
}

// TestPrometheusEndpoint publishes metrics, a health change and events at a
// site; the hub's endpoint serves the latest value of each series, and the
// output parses with the Prometheus text parser.
func TestPrometheusEndpoint(t *testing.T) {
	ctx := context.Background()
	_, hjs, p := stack(t)
	// The endpoint binds a port of its own choosing and logs its URL.
	logged := &check.Buffer{}
	exp, err := metrics.Start(ctx, metrics.Config{JS: hjs, Log: slog.New(slog.NewTextHandler(logged, nil))})
	check.NoError(t, err)
	defer exp.Stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go exp.ListenAndServe(sctx, "127.0.0.1:0")
	var url string
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		m := endpointRE.FindStringSubmatch(logged.String())
		if m == nil {
			return fmt.Errorf("no prometheus endpoint line in the log:\n%s", logged.String())
		}
		url = m[1]
		return nil
	})

	p.Publish(streams.Metric{Name: "cpu.percent", Value: 12.5, Unit: "%", Layer: "host"})
	p.Publish(streams.Metric{Name: "temperature.cpu", Value: 71, Unit: "Cel", Layer: "sensors"})
	p.Publish(streams.Metric{Name: "iface.rx_bytes", Value: 1000, Layer: "net", Labels: map[string]string{"iface": "eth0"}})
	p.Publish(streams.Metric{Name: "iface.rx_bytes", Value: 2000, Layer: "net", Labels: map[string]string{"iface": "eth1"}})
	p.Publish(streams.Metric{Name: "health", Value: 0.5, Layer: "health", Kind: streams.KindHealth,
		Labels: map[string]string{"id": "container:web"}, Text: "restarting"})
	p.Publish(streams.Metric{Name: "remediation.acted", Value: 1, Layer: "remediation", Kind: streams.KindEvent, Text: "restart"})
	p.Publish(streams.Metric{Name: "remediation.acted", Value: 2, Layer: "remediation", Kind: streams.KindEvent, Text: "restart"})
	p.Publish(streams.Metric{Name: "cpu.percent", Value: 13, Unit: "%", Layer: "host"}) // latest wins
	fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
	defer fcancel()
	check.NoError(t, p.Flush(fctx))

	node := map[string]string{"site": "s1", "node": "n1"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"site": "s1", "node": "n1"}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	want := []struct {
		family string
		labels map[string]string
		value  float64
	}{
		{"alpha_cpu_percent", with("layer", "host"), 13},
		{"alpha_temperature_cpu", with("layer", "sensors"), 71},
		{"alpha_iface_rx_bytes", with("iface", "eth0"), 1000},
		{"alpha_iface_rx_bytes", with("iface", "eth1"), 2000},
		{"alpha_health", with("id", "container:web", "layer", "health"), 0.5},
		{"alpha_events_total", with("name", "remediation.acted"), 2},
	}
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		fams, err := scrape(t, url)
		if err != nil {
			return err
		}
		for _, w := range want {
			got, err := value(fams, w.family, w.labels)
			if err != nil {
				return err
			}
			if got != w.value {
				return fmt.Errorf("%s%v = %v, want %v", w.family, w.labels, got, w.value)
			}
		}
		if n := len(fams["alpha_cpu_percent"].Metric); n != 1 {
			return fmt.Errorf("alpha_cpu_percent has %d series, want 1", n)
		}
		return nil
	})

	// A restarted exporter seeds the latest value of each subject.
	exp2, err := metrics.Start(ctx, metrics.Config{JS: hjs, Log: quiet, Durable: "metrics2"})
	check.NoError(t, err)
	defer exp2.Stop()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		fams, err := written(exp2)
		if err != nil {
			return err
		}
		got, err := value(fams, "alpha_cpu_percent", node)
		if err != nil {
			return err
		}
		if got != 13 {
			return fmt.Errorf("seeded cpu %v, want 13", got)
		}
		return nil
	})

	// An analytics client reads the same telemetry with a durable pull
	// consumer of its own, filtered to one site's host layer; it resumes
	// where it stopped after a restart.
	cons, err := hjs.CreateOrUpdateConsumer(ctx, streams.TelemetryStream, jetstream.ConsumerConfig{
		Durable:       "analytics",
		FilterSubject: "telemetry.s1.*.host.>",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	check.NoError(t, err)
	batch, err := cons.Fetch(10, jetstream.FetchMaxWait(2*time.Second))
	check.NoError(t, err)
	var cpu []float64
	for msg := range batch.Messages() {
		var x streams.Metric
		check.NoError(t, json.Unmarshal(msg.Data(), &x))
		cpu = append(cpu, x.Value)
		check.NoError(t, msg.Ack())
	}
	check.NoError(t, batch.Error())
	if len(cpu) != 2 || cpu[0] != 12.5 || cpu[1] != 13 {
		t.Fatalf("analytics consumer read %v, want [12.5 13]", cpu)
	}
}

// rbShows checks that exp serves cpu.percent and remediation.acted events
// of s1/n1 with the values in want (by family).
func rbShows(exp *metrics.Exporter, want map[string]float64) error {
	fams, err := written(exp)
	if err != nil {
		return err
	}
	for family, v := range want {
		labels := map[string]string{"site": "s1", "node": "n1", "layer": "host"}
		if family == "alpha_events_total" {
			labels = map[string]string{"site": "s1", "node": "n1", "name": "remediation.acted"}
		}
		got, err := value(fams, family, labels)
		if err != nil {
			return err
		}
		if got != v {
			return fmt.Errorf("%s = %v, want %v", family, got, v)
		}
	}
	return nil
}

// rbPublish publishes a cpu.percent of cpu and one remediation.acted event
// at s1/n1 and waits until the leaf stored them.
func rbPublish(t *testing.T, p *telemetry.Publisher, cpu float64) {
	t.Helper()
	p.Publish(streams.Metric{Name: "cpu.percent", Value: cpu, Unit: "%", Layer: "host"})
	p.Publish(streams.Metric{Name: "remediation.acted", Value: 1, Layer: "remediation", Kind: streams.KindEvent, Text: "restart"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	check.NoError(t, p.Flush(ctx))
}

// rbServing starts an exporter reading js, its log written to logged, and
// waits until it serves a first cpu.percent (10) and event of s1/n1.
func rbServing(t *testing.T, js jetstream.JetStream, p *telemetry.Publisher) (exp *metrics.Exporter, logged *check.Buffer) {
	t.Helper()
	logged = &check.Buffer{}
	exp, err := metrics.Start(context.Background(), metrics.Config{JS: js, Log: slog.New(slog.NewTextHandler(logged, nil))})
	check.NoError(t, err)
	t.Cleanup(exp.Stop)
	rbPublish(t, p, 10)
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		return rbShows(exp, map[string]float64{"alpha_cpu_percent": 10, "alpha_events_total": 1})
	})
	return exp, logged
}

// rbDelete deletes the exporter's durable consumers, as `nats consumer rm`.
func rbDelete(t *testing.T, hjs jetstream.JetStream) {
	t.Helper()
	for _, s := range []string{streams.TelemetryStream, streams.EventsStream} {
		check.NoError(t, hjs.DeleteConsumer(context.Background(), s, "metrics"))
	}
}

// rbRemade checks that exp's consumers are there again and that its log
// has a warning naming the TELEMETRY stream.
func rbRemade(t *testing.T, hjs jetstream.JetStream, logged *check.Buffer) {
	t.Helper()
	for _, s := range []string{streams.TelemetryStream, streams.EventsStream} {
		if _, err := hjs.Consumer(context.Background(), s, "metrics"); err != nil {
			t.Fatalf("consumer metrics on %s not made again: %v", s, err)
		}
	}
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), streams.TelemetryStream) {
		t.Fatalf("no warning naming %s in the exporter's log:\n%s", streams.TelemetryStream, logged.String())
	}
}

// TestExporterOutlivesItsConsumers: an operator deletes the exporter's
// durable consumers (`nats consumer rm`); the exporter notices, says so in
// its log, makes them again and goes on serving new values, resuming after
// the last message it had: an event is counted once, not again.
func TestExporterOutlivesItsConsumers(t *testing.T) {
	_, hjs, p := stack(t)
	exp, logged := rbServing(t, hjs, p)

	rbDelete(t, hjs)
	rbPublish(t, p, 20)
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		return rbShows(exp, map[string]float64{"alpha_cpu_percent": 20, "alpha_events_total": 2})
	})
	rbRemade(t, hjs, logged)
}

// TestExporterRemakesConsumersLostOffline: the consumers are deleted while
// the exporter's connection is cut, so the server's "consumer deleted"
// never reaches it; after the link is back its pulls go unanswered, and the
// missing heartbeats lead it to find them gone and make them again.
func TestExporterRemakesConsumersLostOffline(t *testing.T) {
	h, hjs, p := stack(t)
	link, err := chaos.NewProxy("127.0.0.1:0", strings.TrimPrefix(h.ClientURL(), "nats://"))
	check.NoError(t, err)
	t.Cleanup(func() { link.Close() })
	enc, err := nats.Connect("nats://"+link.Addr(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	check.NoError(t, err)
	t.Cleanup(enc.Close)
	ejs, err := jetstream.New(enc)
	check.NoError(t, err)
	exp, logged := rbServing(t, ejs, p)

	link.Set(chaos.Cut)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if enc.IsConnected() {
			return fmt.Errorf("exporter still connected through a cut link")
		}
		return nil
	})
	rbDelete(t, hjs)
	rbPublish(t, p, 20)
	link.Set(chaos.Up)
	start := time.Now()
	check.For(t, 90*time.Second, 100*time.Millisecond, func() error {
		return rbShows(exp, map[string]float64{"alpha_cpu_percent": 20, "alpha_events_total": 2})
	})
	t.Logf("new values served %v after the link came back", time.Since(start).Round(100*time.Millisecond))
	rbRemade(t, hjs, logged)
}
