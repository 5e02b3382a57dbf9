package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
)

// RefusedConfig is the configuration name of the status that says why a
// node's newest blueprint revision was not provisioned. Real names start
// with a letter or digit, so it never collides with one.
const RefusedConfig = "_blueprint"

// SignedOnly returns a Config.Decode for operator mode: a value is
// provisioned only when it is an envelope signed by one of the tenant's
// publisher keys for the key it is stored under, checked as the agents check
// it (sign.Open). Anyone else who may write the blueprints bucket (a tenant
// admin's credentials) can no longer make the hub run Terraform. Replay
// protection stays with the agents, whose state is per node: the hub checks
// the signature and the key binding.
func SignedOnly(publishers []string) (func(key string, data []byte) (*blueprint.Blueprint, error), error) {
	trusted, err := sign.Trusted(publishers)
	if err != nil {
		return nil, fmt.Errorf("cloud: %w", err)
	}
	return func(key string, data []byte) (*blueprint.Blueprint, error) {
		p, err := sign.Open(trusted, key, data)
		if err != nil {
			return nil, fmt.Errorf("operator mode provisions only blueprints signed by the tenant's publisher key: %w", err)
		}
		return blueprint.Parse(p.Blueprint)
	}, nil
}

// refused publishes why a node's newest blueprint was not provisioned, under
// Key(site, node, RefusedConfig). The refusal is final for that revision:
// nothing retries it; the next put is decoded afresh.
func (r *Reconciler) refused(ctx context.Context, site, node string, revision uint64, cause error) {
	msg := cause.Error()
	if len(msg) > 4000 {
		msg = msg[:4000] + "\n[truncated]"
	}
	data, _ := json.Marshal(Status{
		Site: site, Node: node, Config: RefusedConfig, Phase: PhaseInvalid, Error: msg,
		Message: fmt.Sprintf("blueprint revision %d not provisioned; this node's cloud configurations stay as they were", revision),
		Hub:     r.cfg.Instance, Updated: time.Now().UTC(),
	})
	k := Key(site, node, RefusedConfig)
	if _, err := r.status.Put(ctx, k, data); err != nil {
		r.log.Warn("publishing refused blueprint status", "key", site+"."+node, "err", err)
		return
	}
	r.mu.Lock()
	r.refusals[k] = true
	r.mu.Unlock()
}

// accepted clears a refusal published for an older revision.
func (r *Reconciler) accepted(ctx context.Context, site, node string) {
	k := Key(site, node, RefusedConfig)
	r.mu.Lock()
	had := r.refusals[k]
	delete(r.refusals, k)
	r.mu.Unlock()
	if !had {
		return
	}
	if err := r.status.Delete(ctx, k); err != nil {
		r.log.Warn("clearing refused blueprint status", "key", site+"."+node, "err", err)
	}
}

// loadRefusals learns the refusals published before this start, so the
// first good revision clears them without a lookup per blueprint.
func (r *Reconciler) loadRefusals(ctx context.Context) error {
	keys, err := r.status.ListKeysFiltered(ctx, Key("*", "*", RefusedConfig))
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range keys.Keys() {
		r.refusals[k] = true
	}
	return nil
}
