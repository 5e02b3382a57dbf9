package streams

import (
	"strconv"
	"time"
)

// Fleets, rollouts and the node inventory. These buckets live at the hub
// only, in the tenant's account: the tenant admin writes them (alpha node
// label, alpha fleet apply, alpha rollout), the hub's rollout controller
// reads them and moves staged, already signed blueprints into node keys of
// the blueprints bucket. No site mirrors them and no site credential may
// touch them.
const (
	// LabelsBucket holds the operator's labels of each node, key
	// <site>.<node>, value the JSON of NodeLabels.
	LabelsBucket = "labels"
	// StagedBucket holds the blueprints `alpha fleet apply` rendered and
	// signed, key <fleet>.<site>.<node>, value the signed envelope exactly
	// as it will be put into the node's key.
	StagedBucket = "staged"
	// RolloutsBucket holds each fleet's rollout, key <fleet>, value the
	// JSON of the rollout (package hub/rollout).
	RolloutsBucket = "rollouts"
)

// NodeLabels is a node's entry in the labels bucket.
type NodeLabels struct {
	Labels  map[string]string `json:"labels"`
	Updated time.Time         `json:"updated"`
}

// NodeFacts is what an agent reports about its machine, in its status:
// selectors match them as labels under the "facts." prefix
// (facts.arch=arm64).
type NodeFacts struct {
	Arch     string `json:"arch"`
	OS       string `json:"os"`     // distribution and version, e.g. debian 13.1
	Kernel   string `json:"kernel"` // kernel release
	CPUs     int    `json:"cpus"`
	MemoryMB uint64 `json:"memoryMB"`
	Version  string `json:"version"` // Alpha's version
}

// Labels are the facts as selector labels.
func (f *NodeFacts) Labels() map[string]string {
	if f == nil {
		return nil
	}
	return map[string]string{
		"facts.arch":     f.Arch,
		"facts.os":       f.OS,
		"facts.kernel":   f.Kernel,
		"facts.cpus":     strconv.Itoa(f.CPUs),
		"facts.memoryMB": strconv.FormatUint(f.MemoryMB, 10),
		"facts.version":  f.Version,
	}
}

// RolledBack is a node's report that it refused a revision after trying
// it: the revision failed to apply or stayed unhealthy past its rollback
// deadline (blueprint spec.rollback), and the node went back to its
// last-known-good revision. It does not try Revision again; a newer one
// clears this.
type RolledBack struct {
	Revision uint64    `json:"revision"` // the refused revision
	To       uint64    `json:"to"`       // the last-known-good revision it returned to (0: none, nothing runs)
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}
