package bundle

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// SiteSeqHeader carries, on every message an uplink import stores at the
// hub, its sequence in the site's stream.
const SiteSeqHeader = "Alpha-Site-Seq"

// Line is one message of an uplink entry.
type Line struct {
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Time    time.Time           `json:"time"`
	Header  map[string][]string `json:"header,omitempty"`
	Data    []byte              `json:"data"`
}

// UplinkExportConfig is the site an uplink export runs at.
type UplinkExportConfig struct {
	Site, Tenant string
	// Seed signs the bundle: the site leaf's own nkey (leaf.creds), which
	// the hub's operator directory lists among the site's issued keys.
	Seed []byte
	// TmpDir holds each stream's lines while they are counted and hashed
	// (default: the system's).
	TmpDir string
	// From, if set, exports every message from this site sequence on,
	// whatever was exported or sent before (a stick that was lost).
	From uint64
	Log  *slog.Logger
}

// ExportUplink writes to w everything the site holds for the hub that
// neither the live uplink nor an earlier export took: for each uplink
// stream (status, telemetry, events) the messages after its uplink
// consumer's ack floor, with their subjects, headers and site sequences,
// each under the Nats-Msg-Id the live link sends it under
// (streams.UplinkIDs), its own or a made-up one. Once w is written and commit succeeds (the caller makes
// the file durable), each uplink consumer moves past what was exported, so
// a later live link does not send it again. Nothing is lost if the stick
// is: the messages stay in the site's streams until their limits age them
// out, and an export with From takes them again.
func ExportUplink(ctx context.Context, js jetstream.JetStream, cfg UplinkExportConfig, w *Writer, commit func() error) (*Manifest, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	m := w.Manifest()
	m.Format, m.Site, m.Tenant = UplinkFormat, cfg.Site, cfg.Tenant
	type moved struct {
		stream string
		next   uint64
	}
	var advance []moved
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("bundle: site stream %s: %w", name, err)
		}
		c, err := s.Consumer(ctx, streams.UplinkConsumer(name))
		if err != nil {
			return nil, fmt.Errorf("bundle: uplink consumer of %s: %w", name, err)
		}
		ci, err := c.Info(ctx)
		if err != nil {
			return nil, err
		}
		si, err := s.Info(ctx)
		if err != nil {
			return nil, err
		}
		first := max(ci.AckFloor.Stream+1, si.State.FirstSeq)
		if cfg.From > 0 {
			first = max(cfg.From, si.State.FirstSeq)
		}
		last := si.State.LastSeq
		if si.State.Msgs == 0 || first > last {
			continue
		}
		n, err := exportStream(ctx, s, cfg.Site, name, si.Created, first, last, cfg.TmpDir, w)
		if err != nil {
			return nil, err
		}
		cfg.Log.Info("uplink export", "stream", name, "first", first, "last", last, "messages", n)
		advance = append(advance, moved{name, last + 1})
	}
	if _, err := w.Close(cfg.Seed); err != nil {
		return nil, err
	}
	if commit != nil {
		if err := commit(); err != nil {
			return nil, err
		}
	}
	for _, a := range advance {
		// Only forward: a live link that delivered further meanwhile
		// keeps its place.
		s, err := js.Stream(ctx, a.stream)
		if err != nil {
			return m, err
		}
		ci, err := s.Consumer(ctx, streams.UplinkConsumer(a.stream))
		if err != nil {
			return m, err
		}
		info, err := ci.Info(ctx)
		if err != nil {
			return m, err
		}
		if info.AckFloor.Stream+1 >= a.next {
			continue
		}
		if _, err := js.ResetConsumerToSequence(ctx, a.stream, streams.UplinkConsumer(a.stream), a.next); err != nil {
			return m, fmt.Errorf("bundle: moving the uplink of %s past the export (to %d): %w", a.stream, a.next, err)
		}
	}
	return m, nil
}

// restDeleted tells an export whose reader got nothing for a while
// whether nothing is left to read: the last message read had none after
// it (pending, from its metadata), or, before any was read, the stream
// holds no message from first on. Otherwise the reader stalled (a loaded
// site server) and the messages are still there.
func restDeleted(ctx context.Context, s jetstream.Stream, first, pending uint64) (bool, error) {
	if pending != ^uint64(0) {
		return pending == 0, nil
	}
	_, err := s.GetMsg(ctx, first, jetstream.WithGetMsgSubject(">"))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	return false, err
}

// exportStream spools stream's messages first..last as JSON lines to a
// temporary file (the tar header needs the size) and adds it to w. Each
// carries the Nats-Msg-Id the live link sends it under, also one that has
// none of its own, so the hub stores it once if it comes both ways; the
// entry names the stream's creation time, which its sequences belong to.
func exportStream(ctx context.Context, s jetstream.Stream, site, name string, created time.Time, first, last uint64, tmpDir string, w *Writer) (int, error) {
	ids := streams.NewUplinkIDs(site, name, created)
	tmp, err := os.CreateTemp(tmpDir, "alpha-uplink-*.jsonl")
	if err != nil {
		return 0, fmt.Errorf("bundle: spool for %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	bw := bufio.NewWriterSize(tmp, 256<<10)
	enc := json.NewEncoder(bw)
	// Bounded: Next waits in nats.go's remaking of a broken consumer
	// without looking at its context, for ever by default.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: first,
		MaxResetAttempts: natsutil.ReadResets})
	if err != nil {
		return 0, fmt.Errorf("bundle: reading %s: %w", name, err)
	}
	it, err := c.Messages()
	if err != nil {
		return 0, fmt.Errorf("bundle: reading %s: %w", name, err)
	}
	defer it.Stop()
	n := 0
	var lastRead uint64
	pending := ^uint64(0) // after the last message read; unknown before the first
	for lastRead < last {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := it.Next(jetstream.NextContext(rctx))
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				if rest, ierr := restDeleted(ctx, s, first, pending); ierr != nil || !rest {
					// Messages are there but did not come: the export fails
					// rather than move the uplink past what it never read.
					return n, fmt.Errorf("bundle: reading %s: stalled after sequence %d of %d..%d (%v)", name, lastRead, first, last, cmp.Or(ierr, err))
				}
				break // the rest was deleted (aged out, or older status values)
			}
			return n, fmt.Errorf("bundle: reading %s: %w", name, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return n, err
		}
		lastRead, pending = md.Sequence.Stream, md.NumPending
		if lastRead > last {
			break
		}
		l := Line{Seq: lastRead, Subject: msg.Subject(), Time: md.Timestamp, Data: msg.Data()}
		h := msg.Headers()
		own := h.Get(jetstream.MsgIDHeader)
		if id := ids.ID(own, lastRead); id != own {
			if h == nil {
				h = nats.Header{}
			}
			h.Set(jetstream.MsgIDHeader, id)
		}
		if len(h) > 0 {
			l.Header = h
		}
		if err := enc.Encode(l); err != nil {
			return n, err
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return n, err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return n, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return n, err
	}
	e := Entry{Name: "uplink/" + name + ".jsonl", Kind: KindUplink, Bucket: name, First: first, Last: last, Messages: n,
		Created: created.UnixNano()}
	return n, w.Add(e, size, tmp)
}

// UplinkImported is what an uplink import did.
type UplinkImported struct {
	Site     string
	Stored   map[string]int // per stream
	Skipped  int            // already at the hub (an earlier import), or older status
	Refused  int            // a subject not of the site's own
	Messages int
}

// ImportUplink stores the uplink bundle at path at the hub through hub (the
// tenant administrator's JetStream in the hub's domain). trusted are the
// site's leaf keys from the operator directory (issued, not revoked).
//
// Messages land in a per-site stream BUNDLE_<stream>_<site> that the hub
// stream sources, filtered to the site's own subjects as the live uplink's
// landing stream is; they keep their Nats-Msg-Id, scoped by the site as
// the ingest scopes it (streams.HubMsgID), so the hub stream's duplicate
// window drops a message that also came live (within the window), and
// the hub records the site sequences each import stored, per site stream
// and the stream's creation time (marker bucket), so a second import of
// the same file, at any later time, stores nothing, and a stream made
// again (numbering from 1) is not taken for one already imported.
// A status value older than the one the hub holds for its key is skipped.
func ImportUplink(ctx context.Context, hub jetstream.JetStream, path string, trusted []string, site string) (*UplinkImported, error) {
	m, err := Verify(path, UplinkFormat, trusted)
	if err != nil {
		return nil, err
	}
	if m.Site != site {
		return nil, fmt.Errorf("%w: uplink bundle from site %q, expected %q", ErrOtherSite, m.Site, site)
	}
	marker, err := markers(ctx, hub)
	if err != nil {
		return nil, err
	}
	res := &UplinkImported{Site: site, Stored: map[string]int{}}
	err = Each(path, m, func(e Entry, r io.Reader) error {
		if e.Kind != KindUplink {
			return nil
		}
		if !slices.Contains(streams.Uplinks(), e.Bucket) {
			return fmt.Errorf("%w: uplink entry for unknown stream %q", ErrTampered, e.Bucket)
		}
		return importUplinkStream(ctx, hub, marker, site, e, r, res)
	})
	return res, err
}

func importUplinkStream(ctx context.Context, hub jetstream.JetStream, marker jetstream.KeyValue, site string, e Entry, r io.Reader, res *UplinkImported) error {
	name := e.Bucket
	if err := ensureBundleStream(ctx, hub, site, name); err != nil {
		return err
	}
	// The sequences imported are those of one incarnation of the site's
	// stream: a new one (a new store) numbers from 1 again, and its
	// messages are not the ones imported before.
	key := "uplink." + site + "." + name
	if e.Created != 0 {
		key += "." + strconv.FormatInt(e.Created, 10)
	}
	var have ranges
	var rev uint64
	if ent, err := marker.Get(ctx, key); err == nil {
		rev = ent.Revision()
		if err := json.Unmarshal(ent.Value(), &have); err != nil {
			return fmt.Errorf("bundle: marker %s/%s: %w", MarkerBucket, key, err)
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return err
	}
	var statusKV jetstream.KeyValue
	if name == streams.StatusStream {
		statusKV, _ = hub.KeyValue(ctx, streams.StatusBucket)
	}
	filter := streams.UplinkSubjects(name, site)
	prefix := bundleSubjectPrefix(site, name)
	dec := json.NewDecoder(bufio.NewReaderSize(r, 256<<10))
	var acks []jetstream.PubAckFuture
	for {
		var l Line
		if err := dec.Decode(&l); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("bundle: %s: %w", e.Name, err)
		}
		res.Messages++
		if l.Seq < e.First || l.Seq > e.Last || !streams.SubjectMatches(filter, l.Subject) {
			res.Refused++
			continue
		}
		if have.contains(l.Seq) {
			res.Skipped++
			continue
		}
		if statusKV != nil && !newerStatus(ctx, statusKV, strings.TrimPrefix(l.Subject, "$KV."+streams.StatusBucket+"."), l.Data) {
			res.Skipped++
			continue
		}
		msg := nats.NewMsg(prefix + l.Subject)
		msg.Data = l.Data
		msg.Header = nats.Header(l.Header)
		if msg.Header == nil {
			msg.Header = nats.Header{}
		}
		// The id as the ingest stores it (streams.HubMsgID), so the hub
		// stream that sources this one drops a message that also came
		// live, and only that: site is the bundle's verified signer.
		if id := msg.Header.Get(jetstream.MsgIDHeader); id != "" {
			msg.Header.Set(jetstream.MsgIDHeader, streams.HubMsgID(site, id))
		}
		msg.Header.Set(SiteSeqHeader, strconv.FormatUint(l.Seq, 10))
		ack, err := hub.PublishMsgAsync(msg, jetstream.WithStallWait(30*time.Second))
		if err != nil {
			return fmt.Errorf("bundle: storing %s seq %d: %w", name, l.Seq, err)
		}
		acks = append(acks, ack)
		res.Stored[name]++
		if len(acks) >= 1000 {
			if err := waitAcks(ctx, acks); err != nil {
				return err
			}
			acks = acks[:0]
		}
	}
	if err := waitAcks(ctx, acks); err != nil {
		return err
	}
	have = have.add(e.First, e.Last)
	b, _ := json.Marshal(have)
	var err error
	if rev == 0 {
		_, err = marker.Create(ctx, key, b)
	} else {
		_, err = marker.Update(ctx, key, b, rev)
	}
	if err != nil {
		return fmt.Errorf("bundle: recording site %s's %s seqs %d-%d as imported: %w", site, name, e.First, e.Last, err)
	}
	return nil
}

func waitAcks(ctx context.Context, acks []jetstream.PubAckFuture) error {
	for _, a := range acks {
		select {
		case <-a.Ok():
		case err := <-a.Err():
			return fmt.Errorf("bundle: hub refused a message: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// newerStatus reports whether a status value is newer than the hub's for
// its key (by the time the agent reported it).
func newerStatus(ctx context.Context, kv jetstream.KeyValue, key string, data []byte) bool {
	cur, err := kv.Get(ctx, key)
	if err != nil {
		return true
	}
	var have, got streams.NodeStatus
	if json.Unmarshal(cur.Value(), &have) != nil || json.Unmarshal(data, &got) != nil {
		return true
	}
	return got.Reported.After(have.Reported)
}

// BundleStream is the hub stream an uplink import stores a site's stream
// name in.
func BundleStream(name, site string) string { return "BUNDLE_" + name + "_" + site }

func bundleSubjectPrefix(site, name string) string { return "alpha.bundle." + site + "." + name + "." }

// ensureBundleStream makes the site's bundle stream for name (its subjects
// carry a prefix the stream strips, so it never captures live publishes)
// and makes the hub stream name source it, filtered to the site's own
// subjects. Idempotent.
func ensureBundleStream(ctx context.Context, hub jetstream.JetStream, site, name string) error {
	bs := BundleStream(name, site)
	prefix := bundleSubjectPrefix(site, name)
	cfg := jetstream.StreamConfig{
		Name:             bs,
		Description:      "site " + site + "'s " + name + " from uplink bundles",
		Subjects:         []string{prefix + ">"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: prefix + ">", Destination: ">"},
		Storage:          jetstream.FileStorage,
		Retention:        jetstream.LimitsPolicy,
		Discard:          jetstream.DiscardOld,
		MaxAge:           7 * 24 * time.Hour,
		Duplicates:       10 * time.Minute,
	}
	if name == streams.StatusStream {
		cfg.MaxMsgsPerSubject = 1
	}
	if _, err := hub.Stream(ctx, bs); errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := hub.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("bundle: hub stream %s: %w", bs, err)
		}
	} else if err != nil {
		return fmt.Errorf("bundle: hub stream %s: %w", bs, err)
	}
	src := &jetstream.StreamSource{Name: bs, FilterSubject: streams.UplinkSubjects(name, site)}
	if err := leaf.AddSource(ctx, hub, name, src); err != nil {
		return fmt.Errorf("bundle: adding %s to the sources of hub stream %s: %w", bs, name, err)
	}
	return nil
}

// ranges are inclusive site sequence ranges, sorted, not overlapping.
type ranges [][2]uint64

func (rs ranges) contains(seq uint64) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i][1] >= seq })
	return i < len(rs) && rs[i][0] <= seq
}

func (rs ranges) add(first, last uint64) ranges {
	out := append(ranges{}, rs...)
	out = append(out, [2]uint64{first, last})
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	merged := out[:1]
	for _, r := range out[1:] {
		top := &merged[len(merged)-1]
		if r[0] <= top[1]+1 {
			top[1] = max(top[1], r[1])
			continue
		}
		merged = append(merged, r)
	}
	return merged
}
