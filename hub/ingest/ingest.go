// Package ingest is the hub's end of every site's uplink: it takes batches
// of status values, telemetry, events and log lines from site leaves
// (streams.IngestSubject), keeps each site to its own subjects and quota,
// and stores them in the hub's streams.
//
// The site is known from the request subject, which the hub's permissions
// bind to the leaf's credentials (accounts.LeafPermissions); everything in
// the batch is checked against that site's subjects, so a stolen box can
// write under its own site's name only. A site over its quota is told to
// come back later: its data waits at the site, nothing is dropped.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// Workers handle batches of different sites at once; a site sends its
// next batch only after the answer to the last, so its order holds. A
// worker spends most of a batch waiting for the hub stream's acks, so
// there are many: with 4, a fan-out to 1,000 sites took 3.8 s (p50) for
// the sites' status to reach the hub while the machine was busy.
const Workers = 32

// Service is a running ingest in one tenant's account.
type Service struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger
	now func() time.Time

	lastRefused time.Time // last warning about a redirected request (s.mu)

	subs   []*nats.Subscription
	msgs   chan *nats.Msg
	wg     sync.WaitGroup
	cancel context.CancelFunc

	mu     sync.Mutex
	sites  map[string]*site
	quotas map[string]streams.SiteQuota
}

// site is what the ingest keeps per site: when it last heard from it,
// what it took in the current quota window, and the site's status keys.
type site struct {
	heard       time.Time
	windowStart time.Time
	used        map[string]int64 // bytes per stream in the window
	keys        map[string]bool  // status keys at the hub; nil until loaded
	warned      time.Time        // last warning about what it sent
}

// Serve starts the ingest on nc, a connection in the tenant's account at
// the hub. It returns once it is subscribed.
func Serve(nc *nats.Conn, log *slog.Logger) (*Service, error) {
	if log == nil {
		log = slog.Default()
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(16384))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Service{nc: nc, js: js, log: log.With("component", "ingest"), now: time.Now, cancel: cancel,
		msgs: make(chan *nats.Msg, 8192), sites: map[string]*site{}, quotas: map[string]streams.SiteQuota{}}
	sub, err := nc.ChanQueueSubscribe(streams.IngestRoot+".*", streams.IngestQueue, s.msgs)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ingest: %w", err)
	}
	sub.SetPendingLimits(-1, 256<<20)
	links, err := nc.Subscribe(streams.LinksSubject, s.answerLinks)
	if err != nil {
		sub.Unsubscribe()
		cancel()
		return nil, fmt.Errorf("ingest: %w", err)
	}
	resets, err := s.serveResets()
	if err != nil {
		sub.Unsubscribe()
		links.Unsubscribe()
		cancel()
		return nil, fmt.Errorf("ingest: reset gateway: %w", err)
	}
	s.subs = []*nats.Subscription{sub, links, resets}
	for range Workers {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case m := <-s.msgs:
					s.handle(ctx, m)
				}
			}
		}()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.watchQuotas(ctx)
	}()
	return s, nil
}

// Stop unsubscribes and waits for the workers.
func (s *Service) Stop() {
	for _, sub := range s.subs {
		sub.Unsubscribe()
	}
	s.cancel()
	s.wg.Wait()
}

func (s *Service) handle(ctx context.Context, m *nats.Msg) {
	if streams.IsJSAckReply(m.Reply) {
		// Its subject is not the one the site published on and was
		// allowed (streams.IsJSAckReply): it names another site.
		s.refused("uplink", m)
		return
	}
	siteID := strings.TrimPrefix(m.Subject, streams.IngestRoot+".")
	reply := s.ingest(ctx, siteID, m.Header.Get(streams.IngestStreamHeader), m.Data)
	b, _ := json.Marshal(reply)
	if m.Reply != "" {
		m.Respond(b)
	}
}

// ingest stores what it can of one batch of stream from site.
func (s *Service) ingest(ctx context.Context, siteID, stream string, data []byte) streams.IngestReply {
	if streams.ValidID("site", siteID) != nil || !isUplink(stream) {
		return streams.IngestReply{Error: fmt.Sprintf("ingest: no uplink %q of site %q", stream, siteID)}
	}
	recs, err := streams.DecodeBatch(data)
	if err != nil {
		return streams.IngestReply{Error: err.Error()}
	}
	now := s.now()
	q := s.quota(siteID)
	s.mu.Lock()
	st := s.sites[siteID]
	if st == nil {
		st = &site{used: map[string]int64{}}
		s.sites[siteID] = st
	}
	st.heard = now
	if now.Sub(st.windowStart) >= q.Window {
		st.windowStart, st.used = now, map[string]int64{}
	}
	s.mu.Unlock()
	if len(recs) == 0 {
		return streams.IngestReply{} // a heartbeat
	}
	if stream == streams.StatusStream {
		if err := s.loadKeys(ctx, siteID, st); err != nil {
			return streams.IngestReply{Error: err.Error()}
		}
	}
	filter := streams.UplinkSubjects(stream, siteID)
	limit := quotaBytes(q, stream)
	var (
		msgs    []*nats.Msg
		index   []int // record index of each message
		reply   streams.IngestReply
		dropped int
	)
	// Decide under the lock (quota, keys), publish outside it: a publish
	// may wait for the hub stream.
	s.mu.Lock()
	for i, r := range recs {
		if !streams.SubjectMatches(filter, r.Subject) || !opAllowed(stream, r.Op) {
			// Not the site's own: never stored, but taken so the site's
			// own messages behind it keep flowing.
			dropped++
			reply.Stored = i + 1
			continue
		}
		if stream == streams.StatusStream {
			if !st.keys[r.Subject] && int64(len(st.keys)) >= q.StatusKeys {
				dropped++
				reply.Stored = i + 1
				continue
			}
			st.keys[r.Subject] = true
		} else {
			size := int64(len(r.Subject) + len(r.Data))
			if st.used[stream]+size > limit && st.used[stream] > 0 {
				reply.RetryAfter = max(st.windowStart.Add(q.Window).Sub(now), 10*time.Millisecond)
				break
			}
			st.used[stream] += size
		}
		msg := nats.NewMsg(streams.HubIngestPrefix(stream) + "." + r.Subject)
		msg.Data = r.Data
		msg.Header.Set(jetstream.ExpectedStreamHeader, stream)
		if r.ID != "" {
			// Scoped by the site of the request subject: a site cannot
			// pre-empt another's ids (streams.HubMsgID).
			msg.Header.Set(jetstream.MsgIDHeader, streams.HubMsgID(siteID, r.ID))
		}
		if r.Op != "" {
			msg.Header.Set("KV-Operation", r.Op)
			if r.Op == "PURGE" {
				msg.Header.Set("Nats-Rollup", "sub")
			}
		}
		msgs, index = append(msgs, msg), append(index, i)
		reply.Stored = i + 1
	}
	warn := dropped > 0 && now.Sub(st.warned) > time.Minute
	if warn {
		st.warned = now
	}
	s.mu.Unlock()
	if warn {
		s.log.Warn("dropped what a site sent under other names or over its status key quota", "site", siteID, "stream", stream, "count", dropped)
	}
	var futures []jetstream.PubAckFuture
	for k, msg := range msgs {
		f, err := s.js.PublishMsgAsync(msg)
		if err != nil {
			reply.Stored, reply.RetryAfter, reply.Error = index[k], 0, err.Error()
			s.unuse(siteID, stream, recs, index[k:])
			break
		}
		futures = append(futures, f)
	}
	wait := time.NewTimer(10 * time.Second)
	defer wait.Stop()
	for k, f := range futures {
		select {
		case <-f.Ok():
			continue
		case err := <-f.Err():
			reply.Stored, reply.RetryAfter, reply.Error = index[k], 0, err.Error()
		case <-wait.C:
			reply.Stored, reply.RetryAfter, reply.Error = index[k], 0, "ingest: the hub stream did not acknowledge in 10s"
		case <-ctx.Done():
			reply.Stored, reply.RetryAfter, reply.Error = index[k], 0, "ingest: stopping"
		}
		s.unuse(siteID, stream, recs, index[k:len(futures)])
		break
	}
	return reply
}

// unuse gives back the quota of records that were not stored.
func (s *Service) unuse(siteID, stream string, recs []streams.Record, idx []int) {
	if stream == streams.StatusStream {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st := s.sites[siteID]; st != nil {
		for _, i := range idx {
			st.used[stream] -= int64(len(recs[i].Subject) + len(recs[i].Data))
		}
	}
}

// loadKeys reads the site's status keys at the hub once, so the key quota
// holds across hub restarts.
func (s *Service) loadKeys(ctx context.Context, siteID string, st *site) error {
	s.mu.Lock()
	loaded := st.keys != nil
	s.mu.Unlock()
	if loaded {
		return nil
	}
	// Short attempts: in a hub cluster whose status stream leader just
	// died, a request goes unanswered until a new leader is elected
	// (1.5-2 s), and one long wait held a site that moved here with the
	// dead member for the whole of it (10 s) before its status went up.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var info *jetstream.StreamInfo
	var err error
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		info, err = statusKeys(actx, s.js, siteID)
		acancel()
		if err == nil || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		return err
	}
	keys := make(map[string]bool, len(info.State.Subjects))
	for k := range info.State.Subjects {
		keys[k] = true
	}
	s.mu.Lock()
	if st.keys == nil {
		st.keys = keys
	}
	s.mu.Unlock()
	return nil
}

// answerLinks tells a reader when this ingest last heard from each site.
func (s *Service) answerLinks(m *nats.Msg) {
	s.mu.Lock()
	out := make(map[string]time.Time, len(s.sites))
	for id, st := range s.sites {
		out[id] = st.heard
	}
	s.mu.Unlock()
	b, _ := json.Marshal(out)
	m.Respond(b)
}

func (s *Service) quota(siteID string) streams.SiteQuota {
	s.mu.Lock()
	defer s.mu.Unlock()
	if q, ok := s.quotas[siteID]; ok {
		return q
	}
	return streams.DefaultSiteQuota
}

// watchQuotas keeps the per-site quotas from the quotas bucket. A value
// that does not decode keeps the site on the defaults and is logged.
func (s *Service) watchQuotas(ctx context.Context) {
	natsutil.FollowKV(ctx, s.js, streams.QuotasBucket, s.log, s.setQuota)
}

func (s *Service) setQuota(e jetstream.KeyValueEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Operation() != jetstream.KeyValuePut {
		delete(s.quotas, e.Key())
		return
	}
	var q streams.SiteQuota
	if err := json.Unmarshal(e.Value(), &q); err != nil || q.Validate() != nil {
		s.log.Warn("site quota does not decode; the site keeps the defaults", "site", e.Key(), "err", errors.Join(err, q.Validate()))
		delete(s.quotas, e.Key())
		return
	}
	s.quotas[e.Key()] = q
}

func quotaBytes(q streams.SiteQuota, stream string) int64 {
	switch stream {
	case streams.EventsStream:
		return q.EventsBytes
	case streams.LogsStream:
		if q.LogsBytes > 0 {
			return q.LogsBytes
		}
		return streams.DefaultSiteQuota.LogsBytes
	}
	return q.TelemetryBytes
}

func isUplink(stream string) bool {
	for _, u := range streams.Uplinks() {
		if u == stream {
			return true
		}
	}
	return false
}

// opAllowed: a site may delete or purge its own status keys; nothing else
// carries an operation.
func opAllowed(stream, op string) bool {
	return op == "" || stream == streams.StatusStream && (op == "DEL" || op == "PURGE")
}

// statusKeys is the hub status stream's info with the site's keys.
func statusKeys(ctx context.Context, js jetstream.JetStream, siteID string) (*jetstream.StreamInfo, error) {
	str, err := js.Stream(ctx, streams.StatusStream)
	if err != nil {
		return nil, fmt.Errorf("ingest: hub status stream: %w", err)
	}
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(streams.KVSubjects(streams.StatusBucket, siteID)))
	if err != nil {
		return nil, fmt.Errorf("ingest: status keys of site %s: %w", siteID, err)
	}
	return info, nil
}
