package streams

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// The uplink is a request/reply exchange between a site leaf's forwarder
// and the hub's ingest service (hub/ingest). The forwarder reads its site
// streams through local durable consumers and sends batches of records to
// IngestSubject; the ingest checks each record against the site's own
// subjects and quota, stores it in the hub stream and answers how many it
// took. The site acknowledges its local messages only then, so a batch the
// hub never answered is sent again (the hub's duplicate window drops what
// it had already stored).
//
// Before this the hub sourced every site stream into a landing stream of
// the site's own (to filter and bound it) and sourced that on into its own
// stream: four streams and eight consumers per site at the hub, which cost
// ~2.7 MiB of hub memory, 52 MiB of reserved storage and ~33 subscriptions
// per site, and made every leafnode connect O(sites). The ingest holds a
// few counters per site.

// IngestRoot prefixes the ingest's request subjects: IngestRoot.<site>.
const IngestRoot = "alpha.ingest"

// IngestSubject is where site's forwarder sends its batches; the stream
// they belong to is in the IngestStreamHeader. The site is the last token
// and literal in the leaf's permissions: nats-server 2.15 decides whether
// to tell a leaf of the ingest's wildcard subscription with a reverse
// match that misses a permission ending in a wildcard, so a subject per
// site and stream (alpha.ingest.<site>.*) never reached the leaf.
func IngestSubject(site string) string { return IngestRoot + "." + site }

// IngestStreamHeader names the site stream an ingest batch is of.
const IngestStreamHeader = "Alpha-Uplink"

// IngestReplyPrefix is the inbox prefix of a site leaf's forwarder: the
// leaf may receive the hub's answers there and nowhere else.
func IngestReplyPrefix(site string) string { return "alpha.reply." + site }

// IngestQueue is the queue group of the ingest services of a hub cluster.
const IngestQueue = "alpha-ingest"

// HubIngestPrefix is where the ingest publishes stream's records at the
// hub; the hub stream stores them under their own subjects (a stream
// subject transform drops the prefix). A separate subject space keeps a
// site's own publishes, which in open mode cross the leaf link freely, out
// of the hub's streams.
func HubIngestPrefix(stream string) string { return "alpha.in." + stream }

// LinksSubject answers which sites each ingest service heard from and when
// (JSON map site -> time): every member of a hub cluster answers for the
// sites linked to it.
const LinksSubject = "alpha.hub.links"

// QuotasBucket holds per-site quotas at the hub (key <site>, JSON
// SiteQuota); a site without a key has DefaultSiteQuota.
const QuotasBucket = "quotas"

// HubMsgID is the Nats-Msg-Id a site's message is stored under at the hub:
// the site's own id scoped by the site. The hub streams deduplicate on the
// id across every site of the tenant, and ids are not secret (node, boot
// id, sequence), so stored as sent one site could make the hub drop
// another's message by sending its id first, and two honest sites whose ids
// collide would lose data. site is what the hub knows (the ingest's request
// subject, an uplink bundle's verified signer), never what the message
// says. The ingest and the uplink bundle import both use it, so a message
// that reaches the hub both ways is still stored once. An empty id stays
// empty: no deduplication.
func HubMsgID(site, id string) string {
	if id == "" {
		return ""
	}
	return site + "/" + id
}

// Record is one site stream message in an ingest batch.
type Record struct {
	Seq     uint64 // in the site stream
	Subject string
	// ID is the message id (Nats-Msg-Id) the hub deduplicates on; empty
	// for status values, where the latest value wins anyway.
	ID string
	// Op is a KV operation header (KV-Operation: DEL, PURGE) of a status
	// key; empty for a value.
	Op   string
	Data []byte
}

// IngestReply is the ingest's answer to a batch.
type IngestReply struct {
	// Stored counts the batch's leading records the hub took (stored, or
	// dropped as not the site's own); the forwarder acknowledges those.
	Stored int `json:"stored"`
	// RetryAfter, when the site's quota stopped the batch, is how long the
	// forwarder waits before sending the rest.
	RetryAfter time.Duration `json:"retry_after,omitempty"`
	Error      string        `json:"error,omitempty"`
}

// MaxIngestBatch bounds an encoded batch below the default max payload.
const MaxIngestBatch = 512 << 10

// AppendRecord appends r's encoding to b.
func AppendRecord(b []byte, r Record) []byte {
	b = binary.AppendUvarint(b, r.Seq)
	for _, s := range []string{r.Subject, r.ID, r.Op} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(r.Data)))
	return append(b, r.Data...)
}

// RecordSize is the encoded size of r, near enough to keep batches under
// MaxIngestBatch.
func RecordSize(r Record) int {
	return 4*binary.MaxVarintLen32 + len(r.Subject) + len(r.ID) + len(r.Op) + len(r.Data)
}

// ErrBadBatch is a batch that does not decode.
var ErrBadBatch = errors.New("malformed ingest batch")

// DecodeBatch decodes a batch; Data of each record aliases b.
func DecodeBatch(b []byte) ([]Record, error) {
	var out []Record
	for len(b) > 0 {
		var r Record
		seq, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("%w: record %d: sequence", ErrBadBatch, len(out))
		}
		r.Seq, b = seq, b[n:]
		fields := []*string{&r.Subject, &r.ID, &r.Op}
		for i, f := range fields {
			l, n := binary.Uvarint(b)
			if n <= 0 || l > uint64(len(b)-n) {
				return nil, fmt.Errorf("%w: record %d: field %d", ErrBadBatch, len(out), i)
			}
			*f, b = string(b[n:n+int(l)]), b[n+int(l):]
		}
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return nil, fmt.Errorf("%w: record %d: data", ErrBadBatch, len(out))
		}
		r.Data, b = b[n:n+int(l)], b[n+int(l):]
		out = append(out, r)
	}
	return out, nil
}

// SubjectMatches reports whether subject is matched by filter (tokens, *
// and a trailing >); a subject with wildcards or empty tokens of its own
// never matches.
func SubjectMatches(filter, subject string) bool {
	if subject == "" || strings.ContainsAny(subject, "*> \t\r\n") {
		return false
	}
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, f := range ft {
		if i >= len(st) || st[i] == "" {
			return false
		}
		if f == ">" {
			return !slices.Contains(st[i:], "")
		}
		if f != "*" && f != st[i] {
			return false
		}
	}
	return len(st) == len(ft)
}

// ResetRoot prefixes where the hub's reset gateway takes a site's mirror
// consumer resets: ResetRoot.<stream>.<durable>. A site's account imports
// its own consumers' subjects here as $JS.API.CONSUMER.RESET.<stream>.<durable>,
// not the JetStream API itself (see hub/ingest/reset.go for why).
const ResetRoot = "alpha.reset"

// ResetSubject is the gateway subject of one mirror consumer's reset.
func ResetSubject(stream, durable string) string { return ResetRoot + "." + stream + "." + durable }

// ResetQueue is the queue group of the reset gateways of a hub cluster.
const ResetQueue = "alpha-reset"

// IsJSAckReply says a reply subject is a JetStream ack subject. nats-server
// delivers a message from a leafnode connection whose reply is
// $JS.ACK.<8 or more tokens>@<subject> under <subject> instead of the one
// it was published (and permission-checked) on, so a site could make a
// hub-side handler that trusts the subject see any subject it likes. No
// site request legitimately carries such a reply: the hub's handlers of
// site requests drop them.
func IsJSAckReply(reply string) bool { return strings.HasPrefix(reply, "$JS.ACK.") }
