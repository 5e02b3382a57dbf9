// Package events publishes the agent's drift repairs to the site's EVENTS
// stream (events.<site>.<node>.drift), which flows up to the hub, so people
// can ask what drifted on a node this week. Events are buffered, bounded,
// while the site leaf is unreachable, in memory and in a spool file.
package events

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/spool"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// DefaultBuffer is how many events wait in memory for the leaf by default.
const DefaultBuffer = 10000

// Event is one drift repair as published.
type Event struct {
	ID       string    `json:"id"` // also the Nats-Msg-Id
	Site     string    `json:"site"`
	Node     string    `json:"node"`
	Driver   string    `json:"driver"`
	Resource string    `json:"resource"`
	Op       string    `json:"op"`
	Detail   string    `json:"detail,omitempty"`
	Found    string    `json:"found,omitempty"`
	Want     string    `json:"want,omitempty"`
	Error    string    `json:"error,omitempty"` // the repair failed
	At       time.Time `json:"at"`
}

// Subject is where a node's drift events go.
func Subject(site, node string) string { return streams.DriftSubject(site, node) }

// Publisher turns engine repairs into events. OnRepair never blocks the
// engine; Run delivers in order, retrying with the same message id, so the
// stream's duplicate window drops a retry whose first attempt did land.
type Publisher struct {
	js         jetstream.JetStream
	site, node string
	log        *slog.Logger
	max        int

	mu      sync.Mutex
	queue   []Event
	seq     uint64
	dropped uint64
	failing map[string]string // resource -> error of its last failed repair
	wake    chan struct{}
	spool   *spool.File[[]Event] // nil: memory only
}

// Spool keeps the events not acked yet in path, so an agent restarted or
// crashed while the leaf is unreachable sends them afterwards (see
// agent/spool); it loads what an earlier run left there. Call before Run.
func (p *Publisher) Spool(path string) error {
	p.spool = &spool.File[[]Event]{Path: path, Log: p.log, Snapshot: func(bool) ([]Event, bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		return slices.Clone(p.queue), len(p.queue) == 0
	}}
	evs, ok, err := p.spool.Load()
	if err != nil || !ok {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, ev := range evs {
		if ev.Site == p.site && ev.Node == p.node && ev.ID != "" {
			p.queue = append(p.queue, ev)
		}
	}
	p.queue = p.queue[max(0, len(p.queue)-p.max):]
	p.log.Info("drift events spool loaded", "events", len(p.queue))
	return nil
}

func (p *Publisher) changed() {
	if p.spool != nil {
		p.spool.Changed()
	}
}

// New builds a publisher keeping at most max events (DefaultBuffer if <= 0)
// while the leaf is unreachable; beyond that the oldest are dropped and
// counted.
func New(js jetstream.JetStream, site, node string, log *slog.Logger, max int) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	if max <= 0 {
		max = DefaultBuffer
	}
	return &Publisher{js: js, site: site, node: node, log: log, max: max, failing: map[string]string{}, wake: make(chan struct{}, 1)}
}

// OnRepair is the engine.Config.OnRepair hook. A repair that keeps failing
// with the same error (the engine retries with backoff) is published once,
// not on every retry.
func (p *Publisher) OnRepair(r engine.Repair) {
	p.mu.Lock()
	if r.Err == nil {
		delete(p.failing, r.Change.ID)
	} else if p.failing[r.Change.ID] == r.Err.Error() {
		p.mu.Unlock()
		return
	} else {
		p.failing[r.Change.ID] = r.Err.Error()
	}
	p.seq++
	ev := Event{
		ID:   fmt.Sprintf("%s.%s.%d.%d", p.site, p.node, r.At.UnixNano(), p.seq),
		Site: p.site, Node: p.node, Driver: r.Driver,
		Resource: r.Change.ID, Op: string(r.Change.Op), Detail: r.Change.Detail,
		Found: r.Change.Found, Want: r.Change.Want, At: r.At.UTC(),
	}
	if r.Err != nil {
		ev.Error = r.Err.Error()
	}
	if len(p.queue) >= p.max {
		p.queue = p.queue[1:]
		p.dropped++
	}
	p.queue = append(p.queue, ev)
	p.changed()
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Pending is how many events wait for the leaf.
func (p *Publisher) Pending() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.queue) }

// Dropped is how many events were lost to the buffer bound.
func (p *Publisher) Dropped() uint64 { p.mu.Lock(); defer p.mu.Unlock(); return p.dropped }

// Run publishes until ctx is done. An event leaves the buffer only after the
// stream acknowledged it.
func (p *Publisher) Run(ctx context.Context) error {
	if p.spool != nil {
		done := make(chan struct{})
		go func() { defer close(done); p.spool.Run(ctx) }()
		defer func() { <-done; p.spool.Write(true) }()
	}
	backoff := time.Duration(0)
	for {
		p.mu.Lock()
		var ev *Event
		if len(p.queue) > 0 {
			e := p.queue[0]
			ev = &e
		}
		p.mu.Unlock()
		if ev == nil {
			select {
			case <-ctx.Done():
				return nil
			case <-p.wake:
			}
			continue
		}
		if err := p.publish(ctx, *ev); err != nil {
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			p.log.Debug("drift event not published; retrying", "id", ev.ID, "err", err, "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			continue
		}
		backoff = 0
		p.mu.Lock()
		if len(p.queue) > 0 && p.queue[0].ID == ev.ID {
			p.queue = p.queue[1:]
			p.changed()
		}
		p.mu.Unlock()
	}
}

func (p *Publisher) publish(ctx context.Context, ev Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_, err = p.js.Publish(ctx, Subject(ev.Site, ev.Node), data, jetstream.WithMsgID(ev.ID))
	return err
}

// Recent returns a node's drift events since a time, oldest first, read
// from a stream holding events.<site>.<node>.drift (the site's EVENTS
// stream, or the hub's copy): what `alpha status` shows as recent drift.
func Recent(ctx context.Context, js jetstream.JetStream, stream, site, node string, since time.Time, limit int) ([]Event, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []Event
	if info.State.Msgs == 0 {
		return out, nil
	}
	// FetchNoWait makes the consumer again and takes no context: bounded,
	// a hub that died fails `alpha status` instead of hanging it.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:   []string{Subject(site, node)},
		DeliverPolicy:    jetstream.DeliverByStartTimePolicy,
		OptStartTime:     &since,
		MaxResetAttempts: natsutil.ReadResets,
	})
	if err != nil {
		return nil, fmt.Errorf("events: stream %s: %w", stream, err)
	}
	var pending uint64 // after the last message read
	seen := false      // a message was read
	for {
		batch, err := c.FetchNoWait(100)
		if err != nil {
			return out, fmt.Errorf("events: stream %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			var ev Event
			if json.Unmarshal(m.Data(), &ev) == nil {
				out = append(out, ev)
			}
		}
		// A batch cut short by a hub that died ends like an empty one:
		// without this check the events read so far came back as all.
		if err := natsutil.BatchError(batch); err != nil {
			return out, fmt.Errorf("events: stream %s: %w", stream, err)
		}
		if n > 0 {
			seen = true
		}
		if n == 0 {
			if !seen {
				// An empty first batch: no event since `since`, or a
				// hub that stopped answering before the first. Only a
				// hub that still answers tells the two apart.
				if _, err := s.Info(ctx); err != nil {
					return out, fmt.Errorf("events: stream %s: %w", stream, err)
				}
			}
			if pending > 0 {
				// An empty batch while messages wait: the server stopped
				// answering (a hub shutting down answers nothing).
				return out, fmt.Errorf("events: stream %s: read stopped with %d events left", stream, pending)
			}
			break
		}
	}
	if limit > 0 && len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out, nil
}
