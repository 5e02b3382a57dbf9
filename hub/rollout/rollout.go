// Package rollout moves a fleet's staged, signed blueprints into its nodes'
// keys batch by batch, at the hub.
//
// A rollout's whole state is one value in the rollouts bucket (key: the
// fleet), so the controller resumes where it was after a hub restart, and
// the CLI pauses, resumes and aborts it by updating that value (with a
// revision check, so neither side loses the other's write).
//
// The controller never signs anything: it copies the envelope `alpha fleet
// apply` staged, and the node verifies the publisher's signature. It judges
// nodes by what they report: a node passes when its status says the
// revision is good (GoodRevision: applied and healthy for the gate's period,
// judged by the node itself with the same spec.rollback), fails when it
// reports rolling the revision back or refusing it, and is pending while its
// site is unreachable or its status is stale. Pending nodes do not hold a
// batch's gate; their key keeps the target, so they converge when they
// return.
package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/streams"
)

// States of a rollout.
const (
	Running   = "Running"
	Paused    = "Paused"
	Completed = "Completed"
	Failed    = "Failed"  // the failure budget was exceeded; it stopped
	Aborted   = "Aborted" // an operator stopped it
)

// Phases of a node in a rollout.
const (
	NodeWaiting  = "Waiting"  // its batch has not reached it yet
	NodeUpdating = "Updating" // its key holds the target; not good yet
	NodePending  = "Pending"  // its key holds the target; the site or node is unreachable
	NodeGood     = "Good"     // it reports the target good
	NodeFailed   = "Failed"   // it rolled the target back or refused it
	NodeRestored = "Restored" // the rollout stopped before the node saw the target; its previous blueprint was put back
	NodeSkipped  = "Skipped"  // the rollout stopped before its batch
)

// Rollout is the value under the fleet's key in the rollouts bucket.
type Rollout struct {
	Fleet      string       `json:"fleet"`
	Generation string       `json:"generation"`
	State      string       `json:"state"`
	Reason     string       `json:"reason,omitempty"`
	Policy     fleet.Policy `json:"policy"`
	// Batches are node keys (<site>.<node>) per batch, planned at start.
	Batches [][]string `json:"batches"`
	// Batch is the index of the batch in progress.
	Batch    int              `json:"batch"`
	Nodes    map[string]*Node `json:"nodes"`
	Started  time.Time        `json:"started"`
	Updated  time.Time        `json:"updated"`
	Finished time.Time        `json:"finished,omitzero"`
}

// Node is one node's place in a rollout.
type Node struct {
	Batch int    `json:"batch"`
	Phase string `json:"phase"`
	// Revision is the blueprints bucket revision that holds the target
	// (0 before the put); Previous the one it replaced (0: none).
	Revision uint64    `json:"revision,omitempty"`
	Previous uint64    `json:"previous,omitempty"`
	Since    time.Time `json:"since,omitzero"`
	// Seen says the target may have reached the node: its site was linked
	// at or after the put, or it reported since. Pending after that, it
	// holds its batch until its verdict arrives.
	Seen   bool   `json:"seen,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Done says the rollout will put nothing more.
func (r *Rollout) Done() bool {
	return r.State == Completed || r.State == Failed || r.State == Aborted
}

// Count returns how many nodes of keys (all when nil) are in each phase.
func (r *Rollout) Count(keys []string) map[string]int {
	out := map[string]int{}
	if keys == nil {
		for _, n := range r.Nodes {
			out[n.Phase]++
		}
		return out
	}
	for _, k := range keys {
		if n := r.Nodes[k]; n != nil {
			out[n.Phase]++
		}
	}
	return out
}

// Sites returns the rollout's node keys grouped by site, sites sorted.
func (r *Rollout) Sites() ([]string, map[string][]string) {
	by := map[string][]string{}
	for k := range r.Nodes {
		s, _, _ := strings.Cut(k, ".")
		by[s] = append(by[s], k)
	}
	var sites []string
	for s, ks := range by {
		sort.Strings(ks)
		sites = append(sites, s)
	}
	sort.Strings(sites)
	return sites, by
}

// Load reads a fleet's rollout and its revision in the bucket.
func Load(ctx context.Context, js jetstream.JetStream, name string) (*Rollout, uint64, error) {
	kv, err := js.KeyValue(ctx, streams.RolloutsBucket)
	if err != nil {
		return nil, 0, fmt.Errorf("bucket %s: %w", streams.RolloutsBucket, err)
	}
	return load(ctx, kv, name)
}

func load(ctx context.Context, kv jetstream.KeyValue, name string) (*Rollout, uint64, error) {
	e, err := kv.Get(ctx, name)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, fmt.Errorf("fleet %q has no rollout (alpha rollout start %s)", name, name)
	}
	if err != nil {
		return nil, 0, err
	}
	var r Rollout
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return nil, 0, fmt.Errorf("rollout %s: %w", name, err)
	}
	return &r, e.Revision(), nil
}

// Start plans and starts the rollout of the fleet's staged generation.
// A rollout still running or paused must be aborted first.
func Start(ctx context.Context, js jetstream.JetStream, name string, now time.Time) (*Rollout, error) {
	meta, err := fleet.LoadMeta(ctx, js, name)
	if err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, streams.RolloutsBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", streams.RolloutsBucket, err)
	}
	old, rev, err := load(ctx, kv, name)
	if err == nil && !old.Done() {
		return nil, fmt.Errorf("the rollout of fleet %s (generation %s) is %s; abort it first (alpha rollout abort %s)", name, old.Generation, old.State, name)
	}
	keys := append([]string(nil), meta.Nodes...)
	sort.Strings(keys)
	r := &Rollout{Fleet: name, Generation: meta.Generation, State: Running, Policy: meta.Policy,
		Batches: meta.Policy.Plan(keys), Nodes: map[string]*Node{}, Started: now.UTC(), Updated: now.UTC()}
	for i, b := range r.Batches {
		for _, k := range b {
			r.Nodes[k] = &Node{Batch: i, Phase: NodeWaiting}
		}
	}
	b, _ := json.Marshal(r)
	if old == nil {
		_, err = kv.Create(ctx, name, b)
	} else {
		_, err = kv.Update(ctx, name, b, rev)
	}
	if err != nil {
		return nil, fmt.Errorf("starting the rollout of %s: %w", name, err)
	}
	return r, nil
}

// Control pauses (Paused), resumes (Running) or aborts (Aborted) a rollout.
func Control(ctx context.Context, js jetstream.JetStream, name, state string) (*Rollout, error) {
	kv, err := js.KeyValue(ctx, streams.RolloutsBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", streams.RolloutsBucket, err)
	}
	for range 20 {
		r, rev, err := load(ctx, kv, name)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Done():
			return r, fmt.Errorf("the rollout of fleet %s is %s already", name, r.State)
		case state == Paused && r.State != Running, state == Running && r.State != Paused:
			return r, fmt.Errorf("the rollout of fleet %s is %s; cannot go to %s", name, r.State, state)
		case state != Paused && state != Running && state != Aborted:
			return r, fmt.Errorf("rollout state %q: want %s, %s or %s", state, Paused, Running, Aborted)
		}
		r.State, r.Updated = state, time.Now().UTC()
		if state == Aborted {
			r.Reason, r.Finished = "aborted by an operator", r.Updated
		}
		b, _ := json.Marshal(r)
		if _, err := kv.Update(ctx, name, b, rev); err == nil {
			return r, nil
		} else if !conflict(err) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("rollout %s: too many concurrent writers", name)
}

// conflict says a KV update lost a race with another writer.
func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence")
}
