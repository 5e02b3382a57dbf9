// Package telemetry gathers the node's signals from every layer into one
// normalized message and publishes them to the site, acked and de-duplicated.
package telemetry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/spool"
	"github.com/alpha-edge/alpha/streams"
)

// PublisherConfig builds a Publisher.
type PublisherConfig struct {
	Conn       *nats.Conn // to the site leaf
	Site, Node string
	Log        *slog.Logger
	// MaxMetrics bounds the metrics waiting in memory while the leaf cannot
	// be reached (default 100,000); beyond it the oldest metrics go first.
	MaxMetrics int
	// MaxKept bounds health changes and events waiting (default 100,000);
	// they are never dropped for metrics, only beyond this bound.
	MaxKept int
	// Batch is how many publishes are in flight at once (default 4096;
	// 1024 measured at about half the raw async rate, 4096 at 0.85-0.93).
	Batch int
	// BootID distinguishes this process's ids from an earlier run's
	// (default: random).
	BootID string
	// SpoolFile keeps what the site has not acked across agent restarts.
	// Health changes and events are written within a second of being
	// queued, so a crash while the leaf is unreachable loses none of them
	// (at most that second); metrics are written when Run stops (a clean
	// stop, an upgrade). The next run sends them again under their old ids,
	// which the streams' 10 min duplicate window drops if they had arrived.
	// Empty: memory only.
	SpoolFile string
}

// Publisher sends messages to the site's streams. Each message gets a stable
// id (node, boot id, sequence) sent as Nats-Msg-Id, and stays queued until
// the stream acknowledges it; a retry after a lost ack is dropped by the
// stream's duplicate window, so nothing is stored twice.
type Publisher struct {
	cfg  PublisherConfig
	js   jetstream.JetStream
	log  *slog.Logger
	seq  atomic.Uint64
	wake chan struct{}

	mu       sync.Mutex
	metrics  []streams.Metric // FIFO, oldest first
	kept     []streams.Metric // health and events, FIFO
	inflight int
	flight   []streams.Metric // the batch being sent (spooled with the queues)

	spool *spool.File[spooled] // nil without SpoolFile

	published atomic.Uint64
	dropped   atomic.Uint64
	retries   atomic.Uint64
}

// NewPublisher builds a publisher; Run sends.
func NewPublisher(cfg PublisherConfig) (*Publisher, error) {
	if cfg.Conn == nil {
		return nil, errors.New("telemetry: publisher needs a NATS connection")
	}
	if err := streams.ValidID("site", cfg.Site); err != nil {
		return nil, err
	}
	if err := streams.ValidID("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.MaxMetrics <= 0 {
		cfg.MaxMetrics = 100_000
	}
	if cfg.MaxKept <= 0 {
		cfg.MaxKept = 100_000
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 4096
	}
	if cfg.BootID == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		cfg.BootID = hex.EncodeToString(b[:])
	}
	js, err := jetstream.NewWithDomain(cfg.Conn, cfg.Site,
		jetstream.WithPublishAsyncMaxPending(cfg.Batch*2),
		jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	p := &Publisher{cfg: cfg, js: js, log: cfg.Log.With("component", "telemetry"), wake: make(chan struct{}, 1)}
	if err := p.loadSpool(); err != nil {
		// A damaged spool must not stop telemetry; say what was lost.
		p.log.Error("telemetry spool unreadable; its messages are lost", "file", cfg.SpoolFile, "err", err)
	}
	return p, nil
}

// spooled is the spool file's content.
type spooled struct {
	Kept    []streams.Metric `json:"kept,omitempty"`
	Metrics []streams.Metric `json:"metrics,omitempty"`
}

func (p *Publisher) loadSpool() error {
	if p.cfg.SpoolFile == "" {
		return nil
	}
	p.spool = &spool.File[spooled]{Path: p.cfg.SpoolFile, Snapshot: p.snapshot, Log: p.log}
	sp, ok, err := p.spool.Load()
	if err != nil || !ok {
		return err
	}
	// Only this node's messages: a spool copied from another node must not
	// speak for it.
	own := func(ms []streams.Metric, limit int) []streams.Metric {
		out := ms[:0]
		for _, m := range ms {
			if m.Site == p.cfg.Site && m.Node == p.cfg.Node && m.ID != "" {
				out = append(out, m)
			}
		}
		return out[max(0, len(out)-limit):]
	}
	p.kept = own(sp.Kept, p.cfg.MaxKept)
	p.metrics = own(sp.Metrics, p.cfg.MaxMetrics)
	p.log.Info("telemetry spool loaded", "kept", len(p.kept), "metrics", len(p.metrics))
	return nil
}

// snapshot is what is not acked yet: health changes and events, and once
// the publisher stopped (final) the metrics too.
func (p *Publisher) snapshot(final bool) (spooled, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var sp spooled
	for _, m := range p.flight {
		if m.Kind != streams.KindMetric {
			sp.Kept = append(sp.Kept, m)
		} else if final {
			sp.Metrics = append(sp.Metrics, m)
		}
	}
	sp.Kept = append(sp.Kept, p.kept...)
	if final {
		sp.Metrics = append(sp.Metrics, p.metrics...)
	}
	return sp, len(sp.Kept) == 0 && len(sp.Metrics) == 0
}

func (p *Publisher) spoolChanged() {
	if p.spool != nil {
		p.spool.Changed()
	}
}

// Publish stamps m (site, node, id, time, kind) and queues it. It never
// blocks: when the queue is full the oldest metric is dropped, never a
// health change or an event.
func (p *Publisher) Publish(m streams.Metric) {
	m.Site, m.Node = p.cfg.Site, p.cfg.Node
	if m.Kind == "" {
		m.Kind = streams.KindMetric
	}
	if m.TS.IsZero() {
		m.TS = time.Now().UTC()
	}
	m.ID = fmt.Sprintf("%s.%s.%d", p.cfg.Node, p.cfg.BootID, p.seq.Add(1))
	p.mu.Lock()
	if m.Kind == streams.KindMetric {
		if len(p.metrics) >= p.cfg.MaxMetrics {
			p.metrics = p.metrics[1:]
			p.dropped.Add(1)
		}
		p.metrics = append(p.metrics, m)
	} else {
		if len(p.kept) >= p.cfg.MaxKept {
			p.kept = p.kept[1:]
			p.dropped.Add(1)
		}
		p.kept = append(p.kept, m)
		p.spoolChanged()
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Stats are the publisher's counters.
type Stats struct {
	Published uint64 // acked by the site
	Dropped   uint64 // dropped from a full queue
	Retries   uint64 // publishes sent again after a failure
	Pending   int    // queued or in flight
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	pending := len(p.metrics) + len(p.kept) + p.inflight
	p.mu.Unlock()
	return Stats{Published: p.published.Load(), Dropped: p.dropped.Load(), Retries: p.retries.Load(), Pending: pending}
}

// Flush waits until everything queued so far is acked (or ctx ends).
func (p *Publisher) Flush(ctx context.Context) error {
	t := time.NewTicker(2 * time.Millisecond)
	defer t.Stop()
	for p.Stats().Pending > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("telemetry: %d messages not acked: %w", p.Stats().Pending, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// Run sends queued messages until ctx is done, retrying failures with
// backoff. Health changes and events go before metrics.
func (p *Publisher) Run(ctx context.Context) {
	if p.spool != nil {
		done := make(chan struct{})
		go func() { defer close(done); p.spool.Run(ctx) }()
		defer func() { <-done; p.spool.Write(true) }()
	}
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		batch := p.take()
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		failed, err := p.send(ctx, batch)
		p.giveBack(batch, failed)
		if len(failed) == 0 {
			backoff = 50 * time.Millisecond
			continue
		}
		p.retries.Add(uint64(len(failed)))
		p.log.Debug("telemetry not acked; retrying", "count", len(failed), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

func (p *Publisher) take() []streams.Metric {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.kept), p.cfg.Batch)
	batch := append([]streams.Metric(nil), p.kept[:n]...)
	p.kept = p.kept[n:]
	if m := min(len(p.metrics), p.cfg.Batch-n); m > 0 {
		batch = append(batch, p.metrics[:m]...)
		p.metrics = p.metrics[m:]
	}
	p.inflight = len(batch)
	p.flight = batch
	return batch
}

// giveBack puts the failed messages back at the front, in their order, so a
// retry keeps each node's order in the stream.
func (p *Publisher) giveBack(batch []streams.Metric, failed []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight = 0
	p.flight = nil
	for _, m := range batch {
		if m.Kind != streams.KindMetric {
			p.spoolChanged() // acked or back in the queue
			break
		}
	}
	var metrics, kept []streams.Metric
	for _, i := range failed {
		if batch[i].Kind == streams.KindMetric {
			metrics = append(metrics, batch[i])
		} else {
			kept = append(kept, batch[i])
		}
	}
	if len(metrics) > 0 {
		p.metrics = append(metrics, p.metrics...)
		if over := len(p.metrics) - p.cfg.MaxMetrics; over > 0 {
			p.metrics = p.metrics[over:]
			p.dropped.Add(uint64(over))
		}
	}
	if len(kept) > 0 {
		p.kept = append(kept, p.kept...)
	}
}

// send publishes a batch asynchronously and checks every ack; it returns the
// indexes that were not acked. A stalled async queue waits (WithStallWait)
// instead of failing, the pitfall FIELD-NOTES records.
func (p *Publisher) send(ctx context.Context, batch []streams.Metric) ([]int, error) {
	futures := make([]jetstream.PubAckFuture, len(batch))
	var failed []int
	var firstErr error
	conn := p.cfg.Conn
	epoch := conn.Stats().Reconnects
	for i, m := range batch {
		// Send a batch over one connection only. Once the client notices a
		// disconnect, messages still in the old socket are lost while later
		// ones would reach the new server (the reconnect buffer) and be
		// stored ahead of them: the rest of the batch waits for the retry,
		// which keeps each node's order in the stream.
		if conn.Stats().Reconnects != epoch || !conn.IsConnected() {
			for j := i; j < len(batch); j++ {
				failed = append(failed, j)
			}
			firstErr = cmp(firstErr, nats.ErrConnectionReconnecting)
			break
		}
		data, err := json.Marshal(m)
		if err != nil { // cannot happen for this type; never retry it
			p.log.Error("telemetry message not encodable", "name", m.Name, "err", err)
			continue
		}
		msg := nats.NewMsg(m.Subject())
		msg.Data = data
		msg.Header.Set(nats.MsgIdHdr, m.ID)
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second))
		if err != nil {
			failed = append(failed, i)
			firstErr = cmp(firstErr, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			p.published.Add(1)
		case err := <-f.Err():
			failed = append(failed, i)
			firstErr = cmp(firstErr, err)
		case <-ctx.Done():
			failed = append(failed, i)
			firstErr = cmp(firstErr, ctx.Err())
		}
	}
	slices.Sort(failed)
	return failed, firstErr
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
