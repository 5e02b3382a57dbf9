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

	"github.com/alpha-edge/alpha/internal/throttle"
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
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	last  map[string]*series
	feeds []*feed
	// ctx ends the keepers of the feeds (Stop).
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// feed is one durable consumer of one tenant's stream and what it has
// handled, so a consumer that was deleted is made again from where it was.
type feed struct {
	src            Tenant
	stream, filter string
	mu             sync.Mutex
	cc             jetstream.ConsumeContext
	gen            int    // of cc: a signal of an earlier one is stale
	seq            uint64 // stream sequence of the last message handled
	broken         chan signal
}

// signal is an error nats.go reported for consume generation gen.
type signal struct {
	gen int
	err error
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
	// The feeds outlive the start: ctx bounds making the consumers only.
	e.ctx, e.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for _, src := range sources {
		for _, sc := range []struct{ stream, filter string }{
			{streams.TelemetryStream, ">"},
			{streams.EventsStream, streams.TelemetryFilter("events", "", "")},
		} {
			f := &feed{src: src, stream: sc.stream, filter: sc.filter, broken: make(chan signal, 1)}
			if err := e.consume(ctx, f); err != nil {
				e.Stop()
				return nil, err
			}
			e.feeds = append(e.feeds, f)
			e.wg.Add(1)
			go e.keep(f)
		}
	}
	return e, nil
}

// consume (re)makes f's durable consumer and consumes it. The first time
// it seeds the latest value of every subject (DeliverLastPerSubject);
// after a loss it resumes after the last message handled, so no event is
// counted twice and none in between is missed (while the stream keeps it).
func (e *Exporter) consume(ctx context.Context, f *feed) error {
	f.mu.Lock()
	if f.cc != nil {
		f.cc.Stop()
	}
	f.gen++
	gen, seq := f.gen, f.seq
	f.mu.Unlock()
	cfg := jetstream.ConsumerConfig{
		Durable:       e.cfg.Durable,
		Description:   "latest values for the Prometheus endpoint",
		DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy:     jetstream.AckNonePolicy,
		FilterSubject: f.filter,
	}
	if seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq+1
	}
	// We own the name: whatever is left of it has the wrong start.
	_ = f.src.JS.DeleteConsumer(ctx, f.stream, e.cfg.Durable)
	c, err := f.src.JS.CreateOrUpdateConsumer(ctx, f.stream, cfg)
	if err != nil {
		return fmt.Errorf("metrics: consumer %s on %s%s: %w", e.cfg.Durable, f.stream, tenantNote(f.src.Name), err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		if err != nil {
			return
		}
		// Two consumers of f may overlap for a moment around a remaking:
		// each message counts once.
		f.mu.Lock()
		if md.Sequence.Stream <= f.seq {
			f.mu.Unlock()
			return
		}
		f.seq = md.Sequence.Stream
		f.mu.Unlock()
		e.add(f.src.Name, m.Data())
	},
		// 10 s pulls have 5 s heartbeats: a consumer lost while the hub
		// was out of reach is noticed some 10 s after it is back (the
		// default: 30 s).
		jetstream.PullExpiry(10*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			select { // nats.go holds a lock here: never block
			case f.broken <- signal{gen, err}:
			default:
			}
		}))
	if err != nil {
		return fmt.Errorf("metrics: consume %s%s: %w", f.stream, tenantNote(f.src.Name), err)
	}
	f.mu.Lock()
	f.cc = cc
	f.mu.Unlock()
	return nil
}

// keep makes f's consumer again when it is gone: deleted by hand (`nats
// consumer rm`: nats.go stops consuming) or lost while the hub was away
// (only heartbeats go missing). Without this the endpoint would serve
// values that no longer change, and they would all turn stale.
func (e *Exporter) keep(f *feed) {
	defer e.wg.Done()
	log := e.log.With("stream", f.stream, "consumer", e.cfg.Durable)
	if f.src.Name != "" {
		log = log.With("tenant", f.src.Name)
	}
	for {
		var s signal
		select {
		case <-e.ctx.Done():
			return
		case s = <-f.broken:
		}
		f.mu.Lock()
		stale := s.gen != f.gen
		f.mu.Unlock()
		if stale || !e.gone(f, s.err) {
			continue
		}
		log.Warn("metrics consumer gone; making it again", "err", s.err)
		for wait := time.Second; ; wait = min(2*wait, 30*time.Second) {
			ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
			err := e.consume(ctx, f)
			cancel()
			if e.ctx.Err() != nil {
				return
			}
			if err == nil {
				f.mu.Lock()
				seq := f.seq
				f.mu.Unlock()
				log.Info("metrics consumer made again; resuming", "after_seq", seq)
				break
			}
			d := throttle.Jitter(wait, 20)
			log.Warn("metrics consumer not made again; retrying", "in", d, "err", err)
			select {
			case <-e.ctx.Done():
				return
			case <-time.After(d):
			}
		}
	}
}

// gone tells whether err, reported while consuming f, means its consumer
// no longer exists. Missing heartbeats also come with a slow or restarting
// hub: the server is asked.
func (e *Exporter) gone(f *feed, err error) bool {
	switch {
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
		return true
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		defer cancel()
		_, err := f.src.JS.Consumer(ctx, f.stream, e.cfg.Durable)
		return errors.Is(err, jetstream.ErrConsumerNotFound)
	}
	return false
}

func tenantNote(name string) string {
	if name == "" {
		return ""
	}
	return " of tenant " + name
}

// Stop ends the consumers.
func (e *Exporter) Stop() {
	e.cancel()
	e.wg.Wait()
	for _, f := range e.feeds {
		f.mu.Lock()
		if f.cc != nil {
			f.cc.Stop()
		}
		f.mu.Unlock()
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
