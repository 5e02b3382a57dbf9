// Package metrics serves the latest value of every telemetry series at the
// hub in the Prometheus text format, so existing dashboards can scrape Alpha.
package metrics

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// Config builds an Exporter.
type Config struct {
	JS jetstream.JetStream // the hub's domain
	// Tenants, when set, replaces JS: under operator mode each tenant's
	// streams live in its own account, read through that tenant's
	// connection, and every series gets a tenant label.
	Tenants []Tenant
	Log     *slog.Logger
	// Durable names the exporter's consumers (default "metrics"): one on
	// TELEMETRY, one on EVENTS, visible to `nats consumer ls`.
	Durable string
	// Stale drops a series not updated for this long (default 10m), so an
	// unreachable site's values do not look current.
	Stale time.Duration
	Now   func() time.Time
}

// Tenant is one account's streams.
type Tenant struct {
	Name string
	JS   jetstream.JetStream
}

// Exporter keeps the latest value of each series.
type Exporter struct {
	cfg  Config
	log  *slog.Logger
	mu   sync.Mutex
	last map[string]*series
	ccs  []jetstream.ConsumeContext
}

type series struct {
	family string
	kind   string // gauge or counter
	help   string
	labels [][2]string
	value  float64
	seen   time.Time
}

// Start creates the durable consumers and begins following the hub's
// TELEMETRY and EVENTS streams. Each start recreates the consumers so they
// seed the latest value of every subject (DeliverLastPerSubject) and follow
// from there; the stream itself is never changed.
func Start(ctx context.Context, cfg Config) (*Exporter, error) {
	sources := cfg.Tenants
	if len(sources) == 0 {
		sources = []Tenant{{JS: cfg.JS}}
	}
	for _, src := range sources {
		if src.JS == nil {
			return nil, fmt.Errorf("metrics: tenant %q: needs the hub's JetStream", src.Name)
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Durable == "" {
		cfg.Durable = "metrics"
	}
	if cfg.Stale <= 0 {
		cfg.Stale = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Exporter{cfg: cfg, log: cfg.Log.With("component", "metrics"), last: map[string]*series{}}
	for _, src := range sources {
		if err := e.follow(ctx, src); err != nil {
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// follow consumes one tenant's TELEMETRY and EVENTS.
func (e *Exporter) follow(ctx context.Context, src Tenant) error {
	cfg := e.cfg
	for _, sc := range []struct{ stream, filter string }{
		{streams.TelemetryStream, ">"},
		{streams.EventsStream, streams.TelemetryFilter("events", "", "")},
	} {
		_ = src.JS.DeleteConsumer(ctx, sc.stream, cfg.Durable)
		c, err := src.JS.CreateOrUpdateConsumer(ctx, sc.stream, jetstream.ConsumerConfig{
			Durable:       cfg.Durable,
			Description:   "latest values for the Prometheus endpoint",
			DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
			AckPolicy:     jetstream.AckNonePolicy,
			FilterSubject: sc.filter,
		})
		if err != nil {
			return fmt.Errorf("metrics: consumer on %s%s: %w", sc.stream, tenantNote(src.Name), err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) { e.add(src.Name, m.Data()) })
		if err != nil {
			return fmt.Errorf("metrics: consume %s%s: %w", sc.stream, tenantNote(src.Name), err)
		}
		e.ccs = append(e.ccs, cc)
	}
	return nil
}

func tenantNote(name string) string {
	if name == "" {
		return ""
	}
	return " of tenant " + name
}

// Stop ends the consumers.
func (e *Exporter) Stop() {
	for _, cc := range e.ccs {
		cc.Stop()
	}
}

func (e *Exporter) add(tenant string, data []byte) {
	var m streams.Metric
	if err := json.Unmarshal(data, &m); err != nil || m.Kind == "" || m.Name == "" {
		return // other events (drift, holds) share the EVENTS stream
	}
	var base [][2]string
	if tenant != "" {
		base = append(base, [2]string{"tenant", tenant})
	}
	base = append(base, [2]string{"site", m.Site}, [2]string{"node", m.Node}, [2]string{"layer", m.Layer})
	labels := slices.Clone(base)
	for k, v := range m.Labels {
		k = labelName(k)
		if k == "site" || k == "node" || k == "layer" || k == "tenant" {
			k = "label_" + k
		}
		labels = append(labels, [2]string{k, v})
	}
	n := len(base)
	sort.Slice(labels[n:], func(i, j int) bool { return labels[n+i][0] < labels[n+j][0] })
	s := &series{family: "alpha_" + metricName(m.Name), kind: "gauge", labels: labels, value: m.Value, seen: e.cfg.Now()}
	s.help = "Alpha telemetry " + m.Name
	if m.Unit != "" {
		s.help += " (" + m.Unit + ")"
	}
	if m.Kind == streams.KindEvent {
		// Events are counted: how many decisions of each kind were made.
		s.family, s.kind, s.help = "alpha_events_total", "counter", "Alpha events by name"
		s.labels = append(base, [2]string{"name", m.Name})
	}
	key := s.family + "{" + render(s.labels) + "}"
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.kind == "counter" {
		if old := e.last[key]; old != nil {
			s.value = old.value
		} else {
			s.value = 0
		}
		s.value++
	}
	e.last[key] = s
}

// ServeHTTP writes every fresh series in the Prometheus text format.
func (e *Exporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_ = e.Write(w)
}

// Write writes every fresh series, families sorted, in the text format.
func (e *Exporter) Write(w io.Writer) error {
	now := e.cfg.Now()
	e.mu.Lock()
	byFamily := map[string][]*series{}
	for k, s := range e.last {
		if now.Sub(s.seen) > e.cfg.Stale {
			delete(e.last, k)
			continue
		}
		byFamily[s.family] = append(byFamily[s.family], s)
	}
	e.mu.Unlock()
	families := make([]string, 0, len(byFamily))
	for f := range byFamily {
		families = append(families, f)
	}
	sort.Strings(families)
	var b strings.Builder
	for _, f := range families {
		ss := byFamily[f]
		sort.Slice(ss, func(i, j int) bool { return render(ss[i].labels) < render(ss[j].labels) })
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", f, escapeHelp(ss[0].help), f, ss[0].kind)
		for _, s := range ss {
			fmt.Fprintf(&b, "%s{%s} %s\n", f, render(s.labels), strconv.FormatFloat(s.value, 'g', -1, 64))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// ListenAndServe serves /metrics on addr until ctx is done. It logs the
// URL it bound ("prometheus endpoint"), so a port of 0 can be found.
func (e *Exporter) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: --metrics-listen %q: %w", addr, err)
	}
	e.log.Info("prometheus endpoint", "url", "http://"+ln.Addr().String()+"/metrics")
	return e.Serve(ctx, ln)
}

// Serve serves /metrics on ln until ctx is done.
func (e *Exporter) Serve(ctx context.Context, ln net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", e)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func render(labels [][2]string) string {
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = l[0] + `="` + escapeValue(l[1]) + `"`
	}
	return strings.Join(parts, ",")
}

var valueEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeValue(s string) string { return valueEscaper.Replace(s) }

var helpEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`)

func escapeHelp(s string) string { return helpEscaper.Replace(s) }

// metricName maps a telemetry name (cpu.percent) to a Prometheus one
// (cpu_percent): anything but letters, digits and _ becomes _.
func metricName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

func labelName(s string) string {
	s = metricName(s)
	if s == "" || s[0] >= '0' && s[0] <= '9' || strings.HasPrefix(s, "__") {
		s = "l_" + s
	}
	return s
}
