package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/blueprint/sign"
)

// Outputs reach the nodes through the status bucket, which a tenant
// administrator can write too. Under operator mode the hub therefore signs
// every Status it publishes with its outputs key (Config.OutputsSeed): the
// value is a sign.Envelope of format sign.OutputsFormat whose payload key is
// Key(site, node, config) and whose content is the Status's JSON. Agents
// that hold the key's public half (hub-outputs.pub in the site bundle)
// accept nothing else. Without a seed (--insecure, dev) the value is the
// Status's JSON, as before.

// outputsSigner signs and re-reads this hub's statuses.
type outputsSigner struct {
	seed    []byte
	trusted map[string]bool // the seed's own public key

	mu   sync.Mutex
	seqs map[string]uint64 // highest sequence read or written per key
}

// next is the sequence of the next value for key: it only goes up, also
// across hubs whose clocks differ a little (the later of now and one past
// the highest seen).
func (s *outputsSigner) next(key string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq := max(uint64(time.Now().UnixNano()), s.seqs[key]+1)
	s.seqs[key] = seq
	return seq
}

func (s *outputsSigner) saw(key string, seq uint64) {
	s.mu.Lock()
	s.seqs[key] = max(s.seqs[key], seq)
	s.mu.Unlock()
}

func newOutputsSigner(seed []byte) (*outputsSigner, error) {
	if len(seed) == 0 {
		return nil, nil
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("cloud: Config.OutputsSeed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	if !nkeys.IsValidPublicUserKey(pub) {
		return nil, fmt.Errorf("cloud: Config.OutputsSeed is a seed of %q, want a user seed (SU...)", pub)
	}
	return &outputsSigner{seed: bytes.TrimSpace(seed), trusted: map[string]bool{pub: true}, seqs: map[string]uint64{}}, nil
}

// encodeStatus is the value published for st under key.
func (r *Reconciler) encodeStatus(key string, st Status) ([]byte, error) {
	data, err := json.Marshal(st)
	if err != nil || r.signer == nil {
		return data, err
	}
	return sign.SignAs(sign.OutputsFormat, r.signer.seed, key, r.signer.next(key), data)
}

// decodeStatus reads a value of the status bucket. A hub that signs accepts
// only its own signature for that key: anything else (a tenant admin's
// write) is an error, so the hub never re-publishes, under its signature,
// outputs it did not produce.
func (r *Reconciler) decodeStatus(key string, value []byte) (Status, error) {
	var st Status
	if r.signer == nil {
		st, _, err := ParseStatus(value)
		return st, err
	}
	p, err := sign.OpenAs(sign.OutputsFormat, r.signer.trusted, key, value)
	if err != nil {
		return st, fmt.Errorf("status %s: %w", key, err)
	}
	if err := json.Unmarshal(p.Blueprint, &st); err != nil {
		return st, fmt.Errorf("status %s: %w", key, err)
	}
	r.signer.saw(key, p.Seq)
	return st, nil
}

// lastOwnStatus is the newest status in key's history this hub can read as
// its own, zero when there is none; never "found", so the next put writes
// over the forged value on top. Without it, that value would make the hub
// publish its next phases without the outputs it applied.
func (r *Reconciler) lastOwnStatus(ctx context.Context, key string) (Status, bool, error) {
	hist, err := r.status.History(ctx, key)
	if err != nil {
		return Status{}, false, nil
	}
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Operation() != jetstream.KeyValuePut {
			continue
		}
		if st, err := r.decodeStatus(key, hist[i].Value()); err == nil {
			return st, false, nil
		}
	}
	return Status{}, false, nil
}

// ParseStatus reads a status bucket value, signed or not, for display: it
// does NOT check the signature (agents do, with sign.NewOutputsVerifier).
func ParseStatus(value []byte) (st Status, signed bool, err error) {
	if c, ok := sign.Content(sign.OutputsFormat, value); ok {
		value, signed = c, true
	}
	if err := json.Unmarshal(value, &st); err != nil {
		return st, signed, err
	}
	if st.Phase == "" {
		return st, signed, errors.New("not a cloud status (no phase)")
	}
	return st, signed, nil
}
