package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/streams"
)

func signer(seed []byte) (string, error) {
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// Stage writes the signed envelopes into the hub's staged bucket, removes
// staged entries of nodes the fleet no longer selects, and writes meta last,
// so a rollout never starts from a half-written stage.
func Stage(ctx context.Context, js jetstream.JetStream, meta Meta, staged []Staged) error {
	kv, err := js.KeyValue(ctx, streams.StagedBucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", streams.StagedBucket, err)
	}
	keep := map[string]bool{}
	for _, s := range staged {
		key := StagedKey(meta.Fleet, s.Key)
		keep[key] = true
		if _, err := kv.Put(ctx, key, s.Envelope); err != nil {
			return fmt.Errorf("staging %s: %w", s.Key, err)
		}
	}
	lister, err := kv.ListKeysFiltered(ctx, meta.Fleet+".>")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	if lister != nil {
		for k := range lister.Keys() {
			if !keep[k] {
				if err := kv.Delete(ctx, k); err != nil {
					return fmt.Errorf("unstaging %s: %w", k, err)
				}
			}
		}
	}
	b, _ := json.Marshal(meta)
	if _, err := kv.Put(ctx, meta.Fleet, b); err != nil {
		return fmt.Errorf("staging %s: %w", meta.Fleet, err)
	}
	return nil
}

// LoadMeta reads a fleet's staged meta.
func LoadMeta(ctx context.Context, js jetstream.JetStream, fleet string) (Meta, error) {
	var m Meta
	kv, err := js.KeyValue(ctx, streams.StagedBucket)
	if err != nil {
		return m, fmt.Errorf("bucket %s: %w", streams.StagedBucket, err)
	}
	e, err := kv.Get(ctx, fleet)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return m, fmt.Errorf("fleet %q is not staged (alpha fleet apply FILE first)", fleet)
	}
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(e.Value(), &m); err != nil {
		return m, fmt.Errorf("fleet %q: staged meta: %w", fleet, err)
	}
	return m, nil
}

// LoadStaged reads a node's staged envelope.
func LoadStaged(ctx context.Context, kv jetstream.KeyValue, fleet, node string) ([]byte, error) {
	e, err := kv.Get(ctx, StagedKey(fleet, node))
	if err != nil {
		return nil, fmt.Errorf("staged blueprint of %s in fleet %s: %w", node, fleet, err)
	}
	return e.Value(), nil
}
