package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The contract of who does what over NATS at a site. Every operation a
// role's code performs at its site leaf is listed here as an Op; package
// accounts turns the lists into the role's grants, and the grants test
// performs each Op with the role's real credentials. A new subject used in
// code but missing here is refused by the leaf, logged at WARN by the
// client and shown in the node's status (see agent's permission watcher).

// Buckets and subjects at the site, besides the uplinks (config.go).
const (
	// HoldsBucket is the KV bucket, in the site's domain, holding the
	// operators' holds, one key per node: <site>.<node>. The leaf creates
	// it; site operators write it; each agent watches its own key.
	HoldsBucket = "holds"
	// ArtifactsStream is the stream behind the artifacts object store. The
	// hub holds the original; every site mirrors it, so agents read
	// artifacts from their own leaf, uplink or not.
	ArtifactsStream = "OBJ_" + ArtifactsBucket
	// TelemetryRoot and EventsRoot are the first subject tokens of metrics
	// and of health changes and events (Metric.Subject).
	TelemetryRoot = "telemetry"
	EventsRoot    = "events"
)

// HoldsConfig is the holds bucket at a site.
var HoldsConfig = jetstream.KeyValueConfig{
	Bucket:      HoldsBucket,
	Description: "operator holds per node (SITE.NODE)",
	History:     5,
	Storage:     jetstream.FileStorage,
}

// DriftSubject is where a node's drift repairs are published (EVENTS).
func DriftSubject(site, node string) string { return EventsRoot + "." + site + "." + node + ".drift" }

// LinkSubject is the site leaf's link service: a request on it is answered
// with a LinkInfo. Agents ask it instead of probing the hub, whose API a
// site credential may not call.
func LinkSubject(site string) string { return "alpha.link." + site }

// LinkInfo is the leaf's answer on LinkSubject.
type LinkInfo struct {
	// Connected says the leafnode link to the hub is up; Synced that the
	// hub side (the mirror consumers) is in place for it.
	Connected bool `json:"connected"`
	Synced    bool `json:"synced"`
	// Pending counts what waits at the site for the hub, per uplink stream.
	Pending map[string]uint64 `json:"pending,omitempty"`
	At      time.Time         `json:"at"`
}

// Inbox is the reply prefix of a client at a site leaf (an agent, a site
// operator). Each client may receive only on its own prefix: with the
// shared _INBOX.> one client could read another's replies and watches.
func Inbox(site, who string) string { return "alpha.inbox." + site + "." + who }

// SiteOperator names the site operator's inbox (Inbox(site, SiteOperator)).
const SiteOperator = "operator"

// OpKind is a kind of NATS operation on a bucket, stream or subject.
type OpKind string

// Kinds of operation.
const (
	// KVRead opens bucket Name and gets and watches its keys matching
	// Filter (a key, or a key pattern with * or >).
	KVRead OpKind = "kv-read"
	// KVWrite puts and deletes keys matching Filter, and reads them.
	KVWrite OpKind = "kv-write"
	// ObjectRead opens object store Name and reads any object in it.
	ObjectRead OpKind = "object-read"
	// Publish sends on subjects matching Filter; a stream captures them
	// and its acks come back on the client's inbox.
	Publish OpKind = "publish"
	// Request asks the service on Filter; the reply comes on the inbox.
	Request OpKind = "request"
	// StreamRead reads stream Name's messages on subjects matching Filter
	// with ordered consumers (alpha logs at the site).
	StreamRead OpKind = "stream-read"
)

// Op is one operation a role performs at its site leaf.
type Op struct {
	Kind   OpKind
	Name   string // bucket or object store (KV*, Object*)
	Filter string // key or subject pattern
	Why    string // for people: what needs it
}

// AgentOps is everything a node's agent does at its site leaf.
func AgentOps(site, node string) []Op {
	key := Key(site, node)
	return []Op{
		{Kind: KVRead, Name: BlueprintsBucket, Filter: key, Why: "watch and level-check its blueprint"},
		{Kind: KVRead, Name: CloudBucket, Filter: key + ".*", Why: "cloud outputs of its configurations"},
		{Kind: KVRead, Name: HoldsBucket, Filter: key, Why: "operator holds on the node"},
		{Kind: KVWrite, Name: StatusBucket, Filter: key, Why: "its status"},
		{Kind: ObjectRead, Name: ArtifactsBucket, Why: "image archives and executables named by its blueprint"},
		{Kind: Publish, Filter: TelemetryRoot + "." + key + ".>", Why: "its metrics"},
		{Kind: Publish, Filter: EventsRoot + "." + key + ".>", Why: "its health changes, remediation and drift events"},
		{Kind: Request, Filter: LinkSubject(site), Why: "uplink state for link telemetry"},
		{Kind: Publish, Filter: LogsRoot + "." + key + ".>", Why: "its units' journal and its containers' output (spec.telemetry.logs)"},
	}
}

// SiteOperatorOps is what people working at the site may do with the site
// operator credential of the bundle: set and release holds, read status
// and log lines.
func SiteOperatorOps(site string) []Op {
	return []Op{
		{Kind: KVWrite, Name: HoldsBucket, Filter: site + ".*", Why: "set, list and release holds (alpha hold)"},
		{Kind: KVRead, Name: StatusBucket, Filter: site + ".*", Why: "read the site's node status"},
		{Kind: Request, Filter: BundleSubject(site, "*"), Why: "have the leaf import a signed bundle or export the uplink (alpha bundle)"},
		{Kind: StreamRead, Name: LogsStream, Filter: LogsSubjects(site), Why: "read the site's log lines, uplink or not (alpha logs --at site)"},
	}
}

// BundleSubject is the site leaf's bundle service for op (import,
// export-uplink): the leaf reads or writes the file named in the request
// with its own rights, so the site operator needs no write access to the
// site's stores.
func BundleSubject(site, op string) string { return "alpha.bundle." + site + "." + op }
