package streams

import (
	"fmt"
	"time"
)

// Buckets of the hub's cloud reconciler. CloudBucket (config.go) carries
// each configuration's CloudStatus and is mirrored to sites; the other two
// never leave the hub.
const (
	// TFStateBucket is the object store holding Terraform state and the
	// last applied configuration.
	TFStateBucket = "tfstate"
	// CloudLocksBucket holds the leases that keep two hubs from running
	// Terraform on the same configuration at once.
	CloudLocksBucket = "cloudlocks"
)

// CloudKey is the key of one configuration in the cloud bucket, the lock
// bucket and (as a prefix) the state store: <site>.<node>.<config>.
func CloudKey(site, node, config string) string { return site + "." + node + "." + config }

// CloudPhase is where a configuration stands.
type CloudPhase string

// Phases of a configuration, as published.
const (
	CloudPlanned    CloudPhase = "planned"  // the plan has changes; apply follows
	CloudApplying   CloudPhase = "applying" // terraform apply is running
	CloudApplied    CloudPhase = "applied"  // the cloud matches the configuration
	CloudFailed     CloudPhase = "failed"   // Error holds Terraform's own message
	CloudDrifted    CloudPhase = "drifted"  // a re-plan found changes; policy report
	CloudDestroying CloudPhase = "destroying"
	CloudDestroyed  CloudPhase = "destroyed" // left the blueprint; outputs gone
	CloudInvalid    CloudPhase = "invalid"   // the node's newest blueprint was refused
)

// PlanSummary counts what the last plan wanted, as Terraform prints it.
type PlanSummary struct {
	Add     int `json:"add"`
	Change  int `json:"change"`
	Destroy int `json:"destroy"`
}

// String reads like Terraform's own "Plan:" line.
func (p PlanSummary) String() string {
	return fmt.Sprintf("%d to add, %d to change, %d to destroy", p.Add, p.Change, p.Destroy)
}

// CloudStatus is the value of a configuration's key in the cloud bucket:
// written by the hub, read by agents (outputs) and `alpha cloud status`.
type CloudStatus struct {
	Site   string     `json:"site"`
	Node   string     `json:"node"`
	Config string     `json:"config"`
	Phase  CloudPhase `json:"phase"`
	Error  string     `json:"error,omitempty"`
	// Message says what happened last, for people (drift found, waiting...).
	Message string `json:"message,omitempty"`
	// Digest is blueprint.CloudConfig.Digest of the revision last worked on;
	// AppliedDigest that of the revision the outputs come from. An agent
	// whose blueprint has another digest knows its outputs are not current.
	Digest        string `json:"digest,omitempty"`
	AppliedDigest string `json:"appliedDigest,omitempty"`
	Drift         string `json:"drift,omitempty"`
	// Plan is the last plan's summary (all zero once converged); Applied is
	// what the last apply did.
	Plan    PlanSummary `json:"plan"`
	Applied PlanSummary `json:"applied"`
	// Outputs holds only the outputs the configuration lists; strings as
	// they are, other types as JSON text.
	Outputs map[string]string `json:"outputs,omitempty"`
	Applies uint64            `json:"applies"`
	Repairs uint64            `json:"repairs,omitempty"`
	Hub     string            `json:"hub,omitempty"`
	Updated time.Time         `json:"updated"`
}
