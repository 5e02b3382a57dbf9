// Package streams names the JetStream buckets, streams and subjects that hub,
// leaves and agents share, and defines the messages that flow through them.
package streams

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Names shared by every role.
const (
	HubDomain        = "hub"
	BlueprintsBucket = "blueprints"
	StatusBucket     = "status"
	TelemetryStream  = "TELEMETRY"
	ArtifactsBucket  = "artifacts"
	// BlueprintHistory is how many revisions of each key the hub keeps.
	BlueprintHistory = 16
)

var idRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,62})$`)

// ValidID checks a site or node id: it becomes a subject token, a JetStream
// domain and a key part, so it must be plain.
func ValidID(kind, id string) error {
	if !idRE.MatchString(id) {
		return fmt.Errorf("%s id %q must be 1-63 lowercase letters, digits, _ or -, starting with a letter or digit", kind, id)
	}
	return nil
}

// APIPrefix is the JetStream API prefix of a domain ($JS.<domain>.API):
// how the hub reaches a site's streams and a site the hub's.
func APIPrefix(domain string) string { return "$JS." + domain + ".API" }

// DomainOfAPIPrefix is the domain an APIPrefix names ("" if it names none).
func DomainOfAPIPrefix(prefix string) string {
	d, ok := strings.CutPrefix(prefix, "$JS.")
	if !ok {
		return ""
	}
	d, ok = strings.CutSuffix(d, ".API")
	if !ok {
		return ""
	}
	return d
}

// Key is the blueprints and status key of a node.
func Key(site, node string) string { return site + "." + node }

// TelemetrySubjects is the subject filter of a site's telemetry.
func TelemetrySubjects(site string) string { return "telemetry." + site + ".>" }

// KVSubjects is the subject filter of a site's keys in a bucket.
func KVSubjects(bucket, site string) string { return "$KV." + bucket + "." + site + ".>" }

// MirrorConsumer prefixes the durable consumers, on hub buckets, that feed a
// site's mirrors. Pre-created durables resume at once after an outage;
// ephemeral ones stall for tens of seconds (see FIELD-NOTES).
func MirrorConsumer(site string) string { return "mirror-" + site }

// MirrorDeliver prefixes where those consumers push.
func MirrorDeliver(site string) string { return "alpha.deliver." + site + ".mirror" }

// Store is a hub bucket or object store that every site mirrors.
type Store struct {
	Bucket string
	// Object says it is an object store; a site mirrors all of it. Of a KV
	// bucket a site mirrors only its own keys (<site>.>).
	Object bool
}

// Stream is the JetStream stream behind the store.
func (s Store) Stream() string {
	if s.Object {
		return "OBJ_" + s.Bucket
	}
	return "KV_" + s.Bucket
}

// Mirrored are the hub stores each site mirrors: its own keys of the
// blueprints and cloud buckets, and the tenant's artifacts.
func Mirrored() []Store {
	return []Store{{Bucket: BlueprintsBucket}, {Bucket: CloudBucket}, {Bucket: ArtifactsBucket, Object: true}}
}

// UplinkConsumer is the durable consumer, on a site's stream, that the
// leaf's forwarder reads to send the stream to the hub's ingest.
func UplinkConsumer(stream string) string { return "uplink-" + stream }

// NodeStatus is what an agent writes to its key in the status bucket.
type NodeStatus struct {
	Site            string     `json:"site"`
	Node            string     `json:"node"`
	Blueprint       string     `json:"blueprint,omitempty"`
	DesiredRevision uint64     `json:"desiredRevision"`
	AppliedRevision uint64     `json:"appliedRevision"`
	Phase           string     `json:"phase"`
	Message         string     `json:"message,omitempty"`
	Invalid         []string   `json:"invalid,omitempty"`
	Errors          []string   `json:"errors,omitempty"`
	Repairs         uint64     `json:"repairs"`
	LastRepair      time.Time  `json:"lastRepair,omitzero"`
	LastReconcile   time.Time  `json:"lastReconcile"`
	Reported        time.Time  `json:"reported"`
	Gate            string     `json:"gate,omitempty"`
	Hold            string     `json:"hold,omitempty"`       // the operator hold in force
	HoldUntil       time.Time  `json:"holdUntil,omitzero"`   // when it ends
	Windows         string     `json:"windows,omitempty"`    // maintenance windows, described
	WindowOpen      bool       `json:"windowOpen"`           // changes may apply now
	Compliance      *float64   `json:"compliance,omitempty"` // fraction of policies passing
	Health          *float64   `json:"health,omitempty"`     // the solution's health, product over its dependencies
	Resources       []Resource `json:"resources,omitempty"`
	// GoodRevision is the node's last-known-good revision: applied and, if
	// the blueprint has spec.rollback, healthy for its period. A rollout's
	// gate passes for a node when this reaches the rollout's revision.
	GoodRevision uint64      `json:"goodRevision,omitempty"`
	RolledBack   *RolledBack `json:"rolledBack,omitempty"`
	Facts        *NodeFacts  `json:"facts,omitempty"`
}

// Resource is the state of one managed thing, as reported.
type Resource struct {
	ID      string  `json:"id"`    // blueprint.ResourceID, e.g. container:web
	State   string  `json:"state"` // ok, running, failed, restarting, pending, held, ...
	Message string  `json:"message,omitempty"`
	Health  float64 `json:"health"` // 0..1
	Repairs uint64  `json:"repairs,omitempty"`
}

// StatusHeartbeat is how often an agent rewrites its status even when
// nothing changed, so the hub can tell a quiet node from a silent one.
const StatusHeartbeat = 10 * time.Second
