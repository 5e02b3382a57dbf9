// Package logs ships the journal of a node's units and the output of its
// containers to the site's LOGS stream, line by line, in order per source,
// each line once.
package logs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/spool"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Config builds a Shipper.
type Config struct {
	Conn       *nats.Conn // to the site leaf
	Site, Node string
	Log        *slog.Logger
	// StateFile keeps each source's position (the journal's cursor, a
	// container's last line) once the site acked the line there, so an
	// agent restart neither reads a line twice nor skips one. Lines read
	// again after a crash carry the ids they had and the stream drops them.
	StateFile string
	// Journal is the journalctl command line to follow units with
	// (default journalctl); a test points it at another machine's journal.
	Journal []string
	// PodmanURI is podman's REST socket (default the rootful one).
	PodmanURI string
	// Emit sends the counters and rate-limit events to the node's
	// telemetry (metrics in TELEMETRY, events in EVENTS).
	Emit func(streams.Metric)
	// Batch bounds the lines in flight at once (default 512).
	Batch int
}

// Shipper publishes lines to the site's LOGS stream. Sources hand it lines
// through a bounded queue: while the leaf cannot take them the queue fills
// and the sources stop reading, so the journal and podman's log files are
// the buffer, not the agent's memory.
type Shipper struct {
	cfg   Config
	log   *slog.Logger
	js    jetstream.JetStream
	queue chan item
	state *spool.File[saved]
	// running makes Runs of successive selections take turns: two ship
	// loops on one queue would reorder lines.
	running sync.Mutex

	mu    sync.Mutex
	pos   map[string]string // source key -> position acked by the site
	stats map[string]*Counts
	// reported is each source's Dropped at the last report: the next
	// rate_limited event says how many were dropped since.
	reported map[string]uint64
}

// Counts are one source's figures, kept across agent restarts (a counter
// that went back to zero at each restart would hide the drops of an agent
// that stopped before its first report).
type Counts struct {
	Shipped uint64 `json:"shipped"` // acked by the site
	Dropped uint64 `json:"dropped"` // refused by the rate limit
	Below   uint64 `json:"below"`   // under the level floor
}

// saved is the state file: positions, counts and what was reported.
type saved struct {
	Positions map[string]string `json:"positions,omitempty"`
	Counts    map[string]Counts `json:"counts,omitempty"`
	Reported  map[string]uint64 `json:"reported,omitempty"`
}

// item is a line with the source position it leaves behind once acked.
type item struct {
	line streams.LogLine
	key  string // the reader's key in the state file
	pos  string
	// out says why a line is not shipped (only its position is); counted
	// when the position is committed, so a line read again after a restart
	// is never counted twice.
	out outcome
	src string // the line's source, for the counts
}

type outcome int

const (
	shipped outcome = iota
	belowFloor
	rateLimited
)

// New builds a Shipper; Run ships.
func New(cfg Config) (*Shipper, error) {
	if cfg.Conn == nil {
		return nil, errors.New("logs: the shipper needs a NATS connection")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 512
	}
	if len(cfg.Journal) == 0 {
		cfg.Journal = []string{"journalctl"}
	}
	if cfg.Emit == nil {
		cfg.Emit = func(streams.Metric) {}
	}
	js, err := jetstream.NewWithDomain(cfg.Conn, cfg.Site,
		jetstream.WithPublishAsyncMaxPending(cfg.Batch*2), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	s := &Shipper{cfg: cfg, log: cfg.Log.With("component", "logs"), js: js, queue: make(chan item, cfg.Batch),
		pos: map[string]string{}, stats: map[string]*Counts{}, reported: map[string]uint64{}}
	if cfg.StateFile != "" {
		s.state = &spool.File[saved]{Path: cfg.StateFile, Log: s.log, Snapshot: func(bool) (saved, bool) {
			s.mu.Lock()
			defer s.mu.Unlock()
			sv := saved{Positions: maps.Clone(s.pos), Counts: map[string]Counts{}, Reported: maps.Clone(s.reported)}
			for k, c := range s.stats {
				sv.Counts[k] = *c
			}
			return sv, len(s.pos) == 0 && len(s.stats) == 0
		}}
		sv, ok, err := s.state.Load()
		switch {
		case err != nil:
			// Without positions sources start over: lines already shipped
			// come again under their ids and the stream drops them.
			s.log.Error("log positions unreadable; sources start over", "file", cfg.StateFile, "err", err)
		case ok:
			if sv.Positions != nil {
				s.pos = sv.Positions
			}
			for k, c := range sv.Counts {
				s.stats[k] = &c
			}
			if sv.Reported != nil {
				s.reported = sv.Reported
			}
		}
	}
	return s, nil
}

// Position is where source key stopped (acked by the site); "" if never.
func (s *Shipper) Position(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos[key]
}

// Stats returns each source's counts, by source key.
func (s *Shipper) Stats() map[string]Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]Counts{}
	for k, c := range s.stats {
		out[k] = *c
	}
	return out
}

// Selection is what to follow, from the applied blueprint.
type Selection struct {
	Units, Containers []string
	Level             string
	Rate, Burst       int
}

// Select reads spec.telemetry.logs of bp (nothing without it).
func Select(bp *blueprint.Blueprint) Selection {
	if bp == nil || bp.Spec.Telemetry == nil || bp.Spec.Telemetry.Logs == nil {
		return Selection{}
	}
	l := bp.Spec.Telemetry.Logs
	sel := Selection{Level: l.Level, Rate: l.Rate, Burst: l.Burst}
	sel.Units, sel.Containers = l.Sources(&bp.Spec)
	return sel
}

// Run ships until ctx is done: it follows the journal of sel's units and
// each of sel's containers, and reports counts every ReportEvery. A new
// selection is a new Run (positions carry over through the shipper).
func (s *Shipper) Run(ctx context.Context, sel Selection) {
	s.running.Lock()
	defer s.running.Unlock()
	if sel.Level == "" {
		sel.Level = blueprint.DefaultLogLevel
	}
	if sel.Rate <= 0 {
		sel.Rate = blueprint.DefaultLogRate
	}
	if sel.Burst <= 0 {
		sel.Burst = 2 * sel.Rate
	}
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	if s.state != nil {
		sctx, stop := context.WithCancel(context.Background())
		defer func() { stop(); s.state.Write(true) }()
		go s.state.Run(sctx)
	}
	if len(sel.Units) > 0 {
		j := &journal{s: s, sel: sel, units: sel.Units}
		run(j.follow)
	}
	p := &podman{s: s, uri: s.cfg.PodmanURI}
	for _, name := range sel.Containers {
		run(func(ctx context.Context) { p.follow(ctx, name, sel) })
	}
	run(s.report)
	s.ship(ctx)
	wg.Wait()
}

// gate applies the level floor and the rate limit of one source; it says
// whether the line goes on.
type gate struct {
	floor  int
	bucket bucket
}

func newGate(sel Selection) *gate {
	return &gate{floor: streams.LevelRank(sel.Level), bucket: bucket{rate: float64(sel.Rate), burst: float64(sel.Burst)}}
}

// offer hands a line to the shipper, blocking while its queue is full. A
// line the level floor or the rate limit keeps out is counted and only its
// position is queued. It returns false once ctx is done.
func (s *Shipper) offer(ctx context.Context, g *gate, it item) bool {
	it.src = sourceKey(it.line.Kind, it.line.Source)
	switch {
	case streams.LevelRank(it.line.Level) > g.floor:
		it.out, it.line = belowFloor, streams.LogLine{}
	case !g.bucket.take(time.Now()):
		it.out, it.line = rateLimited, streams.LogLine{}
	}
	select {
	case s.queue <- it:
		return true
	case <-ctx.Done():
		return false
	}
}

func sourceKey(kind, name string) string { return kind + ":" + name }

// ship publishes queued lines in batches until ctx is done.
func (s *Shipper) ship(ctx context.Context) {
	backoff := 50 * time.Millisecond
	var batch []item
	for {
		if len(batch) == 0 {
			select {
			case <-ctx.Done():
				return
			case it := <-s.queue:
				batch = append(batch, it)
			}
		}
	fill:
		for len(batch) < s.cfg.Batch {
			select {
			case it := <-s.queue:
				batch = append(batch, it)
			default:
				break fill
			}
		}
		done, err := s.send(ctx, batch)
		s.commit(batch[:done])
		batch = batch[done:]
		if len(batch) == 0 {
			backoff = 50 * time.Millisecond
			continue
		}
		s.log.Debug("log lines not acked; retrying", "count", len(batch), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// send publishes a batch and returns how many lines from its start are
// acked: a retry resends from the first line not acked, so each source's
// order holds in the stream (lines after it that had arrived are dropped
// by their ids).
func (s *Shipper) send(ctx context.Context, batch []item) (int, error) {
	futures := make([]jetstream.PubAckFuture, len(batch))
	conn := s.cfg.Conn
	epoch := conn.Stats().Reconnects
	var err error
	for i, it := range batch {
		if it.line.ID == "" {
			continue // a skipped line's position
		}
		// One connection per batch: see telemetry.Publisher.send.
		if conn.Stats().Reconnects != epoch || !conn.IsConnected() {
			err = nats.ErrConnectionReconnecting
			break
		}
		data, _ := json.Marshal(it.line)
		msg := nats.NewMsg(it.line.Subject())
		msg.Data = data
		msg.Header.Set(nats.MsgIdHdr, it.line.ID)
		f, perr := s.js.PublishMsgAsync(msg, jetstream.WithStallWait(5*time.Second))
		if perr != nil {
			err = perr
			break
		}
		futures[i] = f
	}
	for i, it := range batch {
		if it.line.ID == "" {
			continue
		}
		f := futures[i]
		if f == nil {
			return i, err
		}
		select {
		case <-f.Ok():
		case ferr := <-f.Err():
			return i, ferr
		case <-ctx.Done():
			return i, ctx.Err()
		}
	}
	return len(batch), nil
}

// commit records the positions of acked lines.
func (s *Shipper) commit(acked []item) {
	if len(acked) == 0 {
		return
	}
	s.mu.Lock()
	for _, it := range acked {
		s.pos[it.key] = it.pos
		c := s.stats[it.src]
		if c == nil {
			c = &Counts{}
			s.stats[it.src] = c
		}
		switch it.out {
		case shipped:
			c.Shipped++
		case belowFloor:
			c.Below++
		case rateLimited:
			c.Dropped++
		}
	}
	s.mu.Unlock()
	if s.state != nil {
		s.state.Changed()
	}
}

// ReportEvery is how often the shipper reports its counts.
var ReportEvery = 10 * time.Second

// report emits each source's counts as metrics (layer logs) and, when the
// rate limit dropped lines since the last report, an event saying how many,
// so a silenced source is visible where alerts look.
func (s *Shipper) report(ctx context.Context) {
	t := time.NewTicker(ReportEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := s.Stats()
		keys := make([]string, 0, len(now))
		for k := range now {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			c := now[k]
			lab := map[string]string{"source": k}
			s.cfg.Emit(streams.Metric{Name: "logs.shipped", Value: float64(c.Shipped), Layer: "logs", Labels: lab})
			s.cfg.Emit(streams.Metric{Name: "logs.dropped", Value: float64(c.Dropped), Layer: "logs", Labels: lab})
			s.mu.Lock()
			d := c.Dropped - min(s.reported[k], c.Dropped)
			s.reported[k] = c.Dropped
			s.mu.Unlock()
			if d > 0 {
				s.cfg.Emit(streams.Metric{Name: "logs.rate_limited", Value: float64(d), Layer: "logs", Kind: streams.KindEvent,
					Labels: map[string]string{"source": k}, Text: fmt.Sprintf("%d lines of %s dropped by the rate limit since the last report", d, k)})
				if s.state != nil {
					s.state.Changed()
				}
			}
		}
	}
}

// bucket is a token bucket: rate tokens a second, at most burst saved.
type bucket struct {
	rate, burst float64
	tokens      float64
	last        time.Time
}

func (b *bucket) take(now time.Time) bool {
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
