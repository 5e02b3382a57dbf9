package leaf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// Forwarding tunables.
const (
	// fetchBatch bounds the messages one ingest request carries (and
	// MaxIngestBatch its bytes).
	fetchBatch = 500
	// heartbeatEvery is how often an idle site tells the hub it is there
	// (sites.StaleAfter is 10 s).
	heartbeatEvery = 3 * time.Second
	// ingestTimeout bounds one request to the hub.
	ingestTimeout = 10 * time.Second
	// maxRecord is the largest record the hub's max payload (1 MiB by
	// default) takes with room for the batch framing; a larger message
	// can never be forwarded and is dropped at the site with a warning.
	maxRecord = 1<<20 - 4<<10
)

// forward is one uplink: it reads the site stream name through the leaf's
// durable consumer and sends it to the hub's ingest in batches, in order;
// it acknowledges messages at the site only once the hub answered that it
// took them. While the uplink is down it waits; the stream holds the rest.
func (l *Leaf) forward(ctx context.Context, up *nats.Conn, name string, log *slog.Logger) {
	log = log.With("uplink", name)
	subject := streams.IngestSubject(l.cfg.Site)
	var (
		cons      jetstream.Consumer
		ids       streams.UplinkIDs
		lastSent  time.Time
		backoff   = 250 * time.Millisecond
		failing   bool
		held      bool // by the site's quota at the hub
		heartbeat = name == streams.StatusStream
	)
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	for ctx.Err() == nil {
		if !l.Connected() {
			if !sleep(100 * time.Millisecond) {
				return
			}
			continue
		}
		if cons == nil {
			c, uids, err := l.uplinkConsumer(ctx, name)
			if err != nil {
				log.Debug("uplink consumer not ready", "err", err)
				if !sleep(time.Second) {
					return
				}
				continue
			}
			cons, ids = c, uids
		}
		msgs, err := fetch(ctx, cons, heartbeatEvery)
		if err != nil && ctx.Err() == nil {
			log.Debug("reading the site stream", "err", err)
			cons = nil
			sleep(time.Second)
			continue
		}
		if len(msgs) == 0 {
			if heartbeat && time.Since(lastSent) >= heartbeatEvery {
				if _, err := l.ingest(ctx, up, subject, name, nil); err == nil {
					lastSent = time.Now()
				}
			}
			continue
		}
		b := l.batch(msgs, ids, log)
		reply, err := l.ingest(ctx, up, subject, name, b.recs)
		if err == nil && reply.Error != "" && reply.Stored == 0 {
			err = errors.New(reply.Error)
		}
		taken := b.taken(reply.Stored)
		if taken > 0 {
			// The consumer acknowledges all up to this one.
			if err := msgs[taken-1].DoubleAck(ctx); err != nil {
				log.Debug("acknowledging at the site", "err", err)
			}
			lastSent = time.Now()
		}
		if taken < len(msgs) {
			// Deliver again from the first message the hub did not take,
			// in order: a Nak would send those before newer ones too, but
			// a message delivered before a crash stays pending until its
			// ack wait, and acknowledging a later one would take it with
			// it (the consumer acknowledges all below), unsent.
			l.resetUplink(ctx, name, log)
		}
		switch {
		case err != nil:
			if !failing {
				log.Warn("hub did not take the uplink; retrying", "err", err)
			}
			failing = true
			if !sleep(backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		case reply.RetryAfter > 0:
			if !held {
				log.Info("site quota at the hub reached; the rest waits at the site", "retry_after", reply.RetryAfter.Round(time.Millisecond))
			}
			held = true
			// Asking again every few seconds is cheap, and a quota
			// raised meanwhile takes effect.
			if !sleep(min(reply.RetryAfter, 5*time.Second)) {
				return
			}
		case reply.Error != "":
			log.Warn("hub stopped a batch part way", "taken", taken, "err", reply.Error)
		}
		if failing || held && reply.RetryAfter == 0 {
			log.Info("uplink flowing again")
			held = false
		}
		failing, backoff = false, 250*time.Millisecond
	}
}

// ingest sends one batch and decodes the answer.
func (l *Leaf) ingest(ctx context.Context, up *nats.Conn, subject, name string, recs []streams.Record) (streams.IngestReply, error) {
	req := nats.NewMsg(subject)
	req.Header.Set(streams.IngestStreamHeader, name)
	for _, r := range recs {
		req.Data = streams.AppendRecord(req.Data, r)
	}
	ctx, cancel := context.WithTimeout(ctx, ingestTimeout)
	defer cancel()
	var reply streams.IngestReply
	m, err := up.RequestMsgWithContext(ctx, req)
	if err != nil {
		return reply, err
	}
	if err := json.Unmarshal(m.Data, &reply); err != nil {
		return reply, fmt.Errorf("ingest answer: %w", err)
	}
	return reply, nil
}

// outgoing is one batch: the records sent, and for each the index of its
// message among those fetched.
type outgoing struct {
	recs  []streams.Record
	index []int
	cut   int // messages covered: records, and messages dropped before and between them
}

// taken is how many fetched messages the hub's answer of stored records
// covers: every message up to the first record it did not take.
func (b *outgoing) taken(stored int) int {
	if stored >= len(b.recs) {
		return b.cut
	}
	return b.index[max(stored, 0)]
}

// batch turns fetched messages into records, up to MaxIngestBatch bytes.
// A message too large for any batch is dropped here with a warning: it
// could never pass, and it must not hold up the rest.
func (l *Leaf) batch(msgs []jetstream.Msg, ids streams.UplinkIDs, log *slog.Logger) *outgoing {
	b := &outgoing{}
	size := 0
	for i, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			break // sent again after the reset
		}
		r := streams.Record{Seq: md.Sequence.Stream, Subject: m.Subject(), Data: m.Data()}
		if h := m.Headers(); h != nil {
			r.ID = h.Get(jetstream.MsgIDHeader)
			r.Op = h.Get("KV-Operation")
		}
		// The id an uplink bundle export gives it too: a message that
		// also goes by stick is stored once.
		r.ID = ids.ID(r.ID, r.Seq)
		n := streams.RecordSize(r)
		if n > maxRecord {
			log.Warn("message too large for the uplink; dropped at the site", "subject", r.Subject, "bytes", len(r.Data))
			b.cut = i + 1
			continue
		}
		if size+n > streams.MaxIngestBatch && len(b.recs) > 0 {
			break
		}
		size += n
		b.recs, b.index = append(b.recs, r), append(b.index, i)
		b.cut = i + 1
	}
	return b
}

// resetUplink makes the uplink consumer deliver again from its ack floor.
func (l *Leaf) resetUplink(ctx context.Context, name string, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := l.js.ResetConsumer(ctx, name, streams.UplinkConsumer(name)); err != nil && ctx.Err() == nil {
		log.Warn("resetting the uplink consumer to its ack floor", "err", err)
	}
}

// fetch returns what waits on the consumer at once, or waits up to wait
// for the first message and then takes what else is there.
func fetch(ctx context.Context, cons jetstream.Consumer, wait time.Duration) ([]jetstream.Msg, error) {
	msgs, err := collect(cons.FetchNoWait(fetchBatch))
	if err != nil || len(msgs) > 0 {
		return msgs, err
	}
	// Bound by ctx too: a leaf shutting down must not wait out the fetch.
	wctx, cancel := context.WithTimeout(ctx, wait)
	msgs, err = collect(cons.Fetch(1, jetstream.FetchContext(wctx)))
	cancel()
	if ctx.Err() != nil {
		return msgs, ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		err = nil // nothing came within wait
	}
	if err != nil || len(msgs) == 0 {
		return msgs, err
	}
	more, err := collect(cons.FetchNoWait(fetchBatch - 1))
	return append(msgs, more...), err
}

func collect(b jetstream.MessageBatch, err error) ([]jetstream.Msg, error) {
	if err != nil {
		return nil, err
	}
	var out []jetstream.Msg
	for m := range b.Messages() {
		out = append(out, m)
	}
	if err := natsutil.BatchError(b); err != nil {
		return out, err
	}
	return out, nil
}

// uplinkConsumer binds the site stream's durable uplink consumer and
// returns it with the ids its stream's messages go to the hub under.
func (l *Leaf) uplinkConsumer(ctx context.Context, name string) (jetstream.Consumer, streams.UplinkIDs, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return nil, streams.UplinkIDs{}, err
	}
	c, err := s.Consumer(ctx, streams.UplinkConsumer(name))
	if err != nil {
		return nil, streams.UplinkIDs{}, err
	}
	// Whatever a previous run had fetched and not seen taken comes again
	// first, in order.
	if _, err := s.ResetConsumer(ctx, streams.UplinkConsumer(name)); err != nil {
		return nil, streams.UplinkIDs{}, fmt.Errorf("resetting to the ack floor: %w", err)
	}
	return c, streams.NewUplinkIDs(l.cfg.Site, name, s.CachedInfo().Created), nil
}

// ensureUplinkConsumer makes the durable consumer a forwarder reads. A
// leaf from before the ingest has a push consumer of the same name that
// delivered to the hub's sources: it is replaced by a pull consumer that
// starts where the old one's acknowledgements ended, so nothing is sent
// twice or skipped.
func ensureUplinkConsumer(ctx context.Context, js jetstream.JetStream, site, name string) error {
	want := streams.UplinkConsumerConfig(site, name)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return err
	}
	if _, err := s.Consumer(ctx, want.Durable); err == nil {
		return nil
	}
	if c, err := s.PushConsumer(ctx, want.Durable); err == nil {
		info := c.CachedInfo()
		if floor := info.AckFloor.Stream; floor > 0 {
			want.DeliverPolicy, want.OptStartSeq = jetstream.DeliverByStartSequencePolicy, floor+1
		}
		if err := s.DeleteConsumer(ctx, want.Durable); err != nil {
			return fmt.Errorf("replacing the push uplink consumer: %w", err)
		}
	}
	_, err = s.CreateOrUpdateConsumer(ctx, want)
	return err
}
