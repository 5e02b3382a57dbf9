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
	"strconv"
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
	// Batch is how many publishes may wait for their ack at once: the
	// window, refilled a quarter at a time (default 4096).
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
//
// Sending is a sliding window of up to Batch unacknowledged publishes: the
// window refills as acks arrive instead of waiting for a whole batch, and
// acks are counted by the JetStream context's handlers rather than by one
// future (two channels, a wakeup) per message. A failure stops the window:
// nothing new goes out until every publish in it is resolved, then the
// failed ones go back to the front of their queue, in order.
type Publisher struct {
	cfg  PublisherConfig
	js   jetstream.JetStream
	log  *slog.Logger
	seq  atomic.Uint64
	wake chan struct{}
	// idPrefix is "node.bootid."; subjects caches Subject per kind, layer
	// and name (used by Run only).
	idPrefix string
	subjects map[subjectKey]string

	mu      sync.Mutex
	metrics []streams.Metric // FIFO, oldest first
	kept    []streams.Metric // health and events, FIFO
	// flight holds what was taken from the queues and not yet reaped, in
	// send order (spooled with the queues until acked). Only Run changes
	// the slice itself, under mu; the ack handlers change entries' state
	// under mu.
	flight     []flying
	base       uint64               // number of flight[0] since the start
	byMsg      map[*nats.Msg]uint64 // sent and unresolved: its number
	done       int                  // acked or gone entries still in flight
	unresolved int                  // sent, neither acked nor failed
	failing    bool                 // an entry failed: send nothing new
	failErr    error                // the first failure's error
	waitSpace  bool                 // Run waits for the window to open
	drained    chan struct{}        // closed when nothing is pending (Flush)

	spool *spool.File[spooled] // nil without SpoolFile

	published atomic.Uint64
	dropped   atomic.Uint64
	retries   atomic.Uint64
}

// flying is one message taken from a queue.
type flying struct {
	m     streams.Metric
	state uint8
}

const (
	sent   uint8 = iota // or about to be
	acked               // stored by the stream
	failed              // not stored (as far as we know): goes back
	gone                // never sendable (not JSON, too large): dropped
)

type subjectKey struct {
	kind, layer, name string
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
	p := &Publisher{cfg: cfg, log: cfg.Log.With("component", "telemetry"), wake: make(chan struct{}, 1),
		idPrefix: cfg.Node + "." + cfg.BootID + ".", subjects: map[subjectKey]string{}, byMsg: map[*nats.Msg]uint64{}}
	// The window never holds more than Batch, so the context's own cap
	// (twice that) never stalls a publish. Every publish resolves: acked,
	// failed, reset by a reconnect, or timed out after 5 s.
	js, err := jetstream.NewWithDomain(cfg.Conn, cfg.Site,
		jetstream.WithPublishAsyncMaxPending(cfg.Batch*2),
		jetstream.WithPublishAsyncTimeout(5*time.Second),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, msg *nats.Msg, _ *jetstream.PubAck) { p.resolve(msg, nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) { p.resolve(msg, err) }))
	if err != nil {
		return nil, err
	}
	p.js = js
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
	for _, f := range p.flight {
		if f.state == acked || f.state == gone {
			continue
		}
		if f.m.Kind != streams.KindMetric {
			sp.Kept = append(sp.Kept, f.m)
		} else if final {
			sp.Metrics = append(sp.Metrics, f.m)
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
	var id [64]byte
	m.ID = string(strconv.AppendUint(append(id[:0], p.idPrefix...), p.seq.Add(1), 10))
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
	Dropped   uint64 // dropped from a full queue, or never sendable (not JSON, too large)
	Retries   uint64 // publishes sent again after a failure
	Pending   int    // queued or in flight
}

// Stats returns the counters.
func (p *Publisher) Stats() Stats {
	p.mu.Lock()
	pending := p.pending()
	p.mu.Unlock()
	return Stats{Published: p.published.Load(), Dropped: p.dropped.Load(), Retries: p.retries.Load(), Pending: pending}
}

// Flush waits until everything queued so far is acked (or ctx ends).
func (p *Publisher) Flush(ctx context.Context) error {
	for {
		p.mu.Lock()
		if p.pending() == 0 {
			p.mu.Unlock()
			return nil
		}
		if p.drained == nil {
			p.drained = make(chan struct{})
		}
		drained := p.drained
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return fmt.Errorf("telemetry: %d messages not acked: %w", p.Stats().Pending, ctx.Err())
		case <-drained:
		}
	}
}

// pending counts what is queued or in flight and not acked. mu held.
func (p *Publisher) pending() int {
	return len(p.metrics) + len(p.kept) + len(p.flight) - p.done
}

// settled wakes Flush once nothing is pending. mu held.
func (p *Publisher) settled() {
	if p.drained != nil && p.pending() == 0 {
		close(p.drained)
		p.drained = nil
	}
}

// Run sends queued messages until ctx is done, retrying failures with
// backoff. Health changes and events go before metrics.
func (p *Publisher) Run(ctx context.Context) {
	if p.spool != nil {
		done := make(chan struct{})
		go func() { defer close(done); p.spool.Run(ctx) }()
		defer func() { <-done; p.spool.Write(true) }()
	}
	defer p.abandon()
	backoff := 50 * time.Millisecond
	var epoch uint64 // the connection the window's publishes went over
	for ctx.Err() == nil {
		from, n, fresh, retry, err := p.next()
		if retry > 0 {
			p.retries.Add(uint64(retry))
			p.log.Debug("telemetry not acked; retrying", "count", retry, "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
			}
			continue
		}
		if fresh {
			epoch = p.cfg.Conn.Stats().Reconnects
		}
		if p.send(from, n, epoch) {
			backoff = 50 * time.Millisecond
		}
	}
}

// next reaps what the stream acked and says what Run does now: send the
// n entries of flight from number from (fresh: nothing was in flight
// before them), back off after giving retry failed messages back (err is
// the first failure), or wait (n and retry 0).
func (p *Publisher) next() (from uint64, n int, fresh bool, retry int, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.waitSpace = false
	p.reap()
	if p.failing {
		if p.unresolved > 0 {
			return 0, 0, false, 0, nil // resolve wakes Run when the last one is
		}
		retry, err = p.requeue(), p.failErr
		p.failing, p.failErr = false, nil
		return 0, 0, false, retry, err
	}
	if len(p.metrics)+len(p.kept) == 0 {
		return 0, 0, false, 0, nil // Publish wakes Run
	}
	space := p.cfg.Batch - len(p.flight)
	if space < max(1, p.cfg.Batch/4) {
		// Refill in quarters, not one message per ack.
		p.waitSpace = true
		return 0, 0, false, 0, nil
	}
	fresh = len(p.flight) == 0
	from = p.base + uint64(len(p.flight))
	for _, q := range []*[]streams.Metric{&p.kept, &p.metrics} {
		k := min(len(*q), space-n)
		for _, m := range (*q)[:k] {
			p.flight = append(p.flight, flying{m: m})
		}
		*q = (*q)[k:]
		n += k
	}
	return from, n, fresh, 0, nil
}

// reap drops the acked entries at the front of flight. mu held.
func (p *Publisher) reap() {
	k := 0
	keptDone := false
	for k < len(p.flight) && (p.flight[k].state == acked || p.flight[k].state == gone) {
		keptDone = keptDone || p.flight[k].m.Kind != streams.KindMetric
		k++
	}
	if k == 0 {
		return
	}
	clear(p.flight[:k]) // let the collector have the labels maps
	p.flight = p.flight[k:]
	p.done -= k
	p.base += uint64(k)
	if len(p.flight) == 0 {
		p.flight = p.flight[:0:0]
	}
	if keptDone {
		p.spoolChanged()
	}
}

// requeue empties a resolved window: what failed goes back to the front of
// its queue, in order, so a retry keeps each node's order in the stream.
// mu held; it returns how many went back.
func (p *Publisher) requeue() int {
	var metrics, kept []streams.Metric
	for _, f := range p.flight {
		switch {
		case f.state == acked || f.state == gone:
		case f.m.Kind == streams.KindMetric:
			metrics = append(metrics, f.m)
		default:
			kept = append(kept, f.m)
		}
	}
	p.base += uint64(len(p.flight))
	p.flight, p.done, p.unresolved = nil, 0, 0
	clear(p.byMsg)
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
	p.spoolChanged() // kept entries acked or back in the queue
	return len(metrics) + len(kept)
}

// abandon gives everything not acked back to the queues when Run stops, so
// the final spool keeps it; acks that arrive later are ignored (a message
// both stored and spooled is sent again under its id and dropped as a
// duplicate).
func (p *Publisher) abandon() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.flight {
		if p.flight[i].state == sent {
			p.flight[i].state = failed
		}
	}
	p.requeue()
	p.failing, p.failErr = false, nil
}

// resolve is the JetStream context's ack and error handler: it marks the
// message's entry and wakes Run when the window needs it.
func (p *Publisher) resolve(msg *nats.Msg, err error) {
	p.mu.Lock()
	n, ok := p.byMsg[msg]
	if !ok { // given back already (Run stopped)
		p.mu.Unlock()
		return
	}
	delete(p.byMsg, msg)
	f := &p.flight[n-p.base]
	if err == nil {
		f.state = acked
		p.done++
		p.published.Add(1)
	} else {
		f.state = failed
		p.failing = true
		p.failErr = cmp(p.failErr, err)
	}
	p.unresolved--
	p.settled()
	wake := p.unresolved == 0 || (p.waitSpace && !p.failing && p.done >= max(1, p.cfg.Batch/4))
	if wake {
		p.waitSpace = false
	}
	p.mu.Unlock()
	if wake {
		p.signal()
	}
}

func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// sendChunk is how many messages send encodes and registers at a time: the
// first of a burst goes out without waiting for the whole window to be
// encoded.
const sendChunk = 128

// send publishes flight entries from..from+n asynchronously; the handlers
// resolve them. It reports false when it stopped early. A stalled async
// queue waits (WithStallWait) instead of failing, the pitfall FIELD-NOTES
// records.
func (p *Publisher) send(from uint64, n int, epoch uint64) bool {
	msgs := make([]*nats.Msg, 0, min(n, sendChunk))
	for sent := 0; sent < n; {
		k := min(sendChunk, n-sent)
		if !p.sendSome(from+uint64(sent), k, epoch, msgs[:0]) {
			// What was not even registered fails as well.
			p.mu.Lock()
			for i := from + uint64(sent+k); i < from+uint64(n); i++ {
				p.flight[i-p.base].state = failed
			}
			p.mu.Unlock()
			return false
		}
		sent += k
	}
	return true
}

// sendSome is send for at most sendChunk entries (msgs is scratch space).
func (p *Publisher) sendSome(from uint64, n int, epoch uint64, msgs []*nats.Msg) bool {
	// Only Run changes p.flight itself, so reading entries' messages
	// without mu is safe; their state is the handlers'.
	for i := range n {
		m := &p.flight[from-p.base+uint64(i)].m
		data, err := json.Marshal(m)
		if err != nil { // a NaN value, say; never retry it
			p.log.Error("telemetry message not encodable", "name", m.Name, "err", err)
			msgs = append(msgs, nil)
			continue
		}
		msgs = append(msgs, &nats.Msg{Subject: p.subject(m), Data: data, Header: nats.Header{nats.MsgIdHdr: []string{m.ID}}})
	}
	// Registered before publishing: an ack may come back before
	// PublishMsgAsync returns.
	p.mu.Lock()
	for i, msg := range msgs {
		if msg == nil {
			p.flight[from-p.base+uint64(i)].state = gone
			p.done++
			p.dropped.Add(1)
			continue
		}
		p.byMsg[msg] = from + uint64(i)
		p.unresolved++
	}
	p.settled() // when nothing was encodable
	p.mu.Unlock()
	conn := p.cfg.Conn
	for i, msg := range msgs {
		if msg == nil {
			continue
		}
		// Send a window over one connection only. Once the client notices
		// a disconnect, messages still in the old socket are lost while
		// later ones would reach the new server (the reconnect buffer) and
		// be stored ahead of them: the rest waits for the retry, which
		// keeps each node's order in the stream.
		var err error
		if conn.Stats().Reconnects != epoch || !conn.IsConnected() {
			err = nats.ErrConnectionReconnecting
		} else if _, err = p.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second)); err == nil {
			continue
		}
		if errors.Is(err, nats.ErrMaxPayload) {
			// It never fits: retrying it would stop everything behind it.
			p.log.Error("telemetry message larger than the leaf takes; dropped", "subject", msg.Subject, "bytes", len(msg.Data), "err", err)
			p.drop(msg)
			continue
		}
		// Not sent (no handler will run for these): they fail here.
		p.unsent(msgs[i:], err)
		return false
	}
	return true
}

// drop gives up a registered message that can never be sent.
func (p *Publisher) drop(msg *nats.Msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := p.byMsg[msg]
	delete(p.byMsg, msg)
	p.flight[n-p.base].state = gone
	p.done++
	p.unresolved--
	p.dropped.Add(1)
	p.settled()
	if p.unresolved == 0 {
		p.signal()
	}
}

// unsent fails messages that were registered but not published.
func (p *Publisher) unsent(msgs []*nats.Msg, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, msg := range msgs {
		if n, ok := p.byMsg[msg]; ok {
			delete(p.byMsg, msg)
			p.flight[n-p.base].state = failed
			p.unresolved--
		}
	}
	p.failing = true
	p.failErr = cmp(p.failErr, err)
	if p.unresolved == 0 {
		p.signal()
	}
}

// subject is m.Subject(), cached: most metrics repeat a few names.
func (p *Publisher) subject(m *streams.Metric) string {
	if m.Site != p.cfg.Site || m.Node != p.cfg.Node {
		return m.Subject()
	}
	k := subjectKey{m.Kind, m.Layer, m.Name}
	if s, ok := p.subjects[k]; ok {
		return s
	}
	if len(p.subjects) >= 4096 { // names are bounded in practice; memory is too
		clear(p.subjects)
	}
	s := m.Subject()
	p.subjects[k] = s
	return s
}

func cmp(a, b error) error {
	if a != nil {
		return a
	}
	return b
}
