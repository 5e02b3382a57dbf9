// Package sign signs blueprints with a publisher's nkey and verifies them at
// the agent: the exact bytes, the node they are for, and a sequence number
// that only goes up, so a replayed older revision is refused. The hub signs
// the cloud outputs it publishes with the same envelope under another
// format (OutputsFormat).
//
// Wire format, the KV value (JSON):
//
//	{"format": F, "payload": base64(P), "signer": "U...", "sig": base64(ed25519(F + "\n" + P))}
//
// where P is the JSON of Payload: {"key", "seq", "signed", "blueprint":
// base64(content)}. F is Format for a blueprint (content: the blueprint's
// bytes, key <site>.<node>) and OutputsFormat for a cloud configuration's
// published status (content: the JSON of hub/cloud.Status, key
// <site>.<node>.<config>). F is signed, so an envelope of one format never
// opens as the other.
package sign

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/nats-io/nkeys"
)

// Format marks a signed envelope; it is also the signature's domain
// separator, so a signature made for anything else never verifies here.
const Format = "alpha-signed-blueprint/v1"

// OutputsFormat marks a cloud configuration's status as published by the
// hub, signed with the hub's outputs key; agents trust only that key for it.
const OutputsFormat = "alpha-signed-cloud-outputs/v1"

// Errors a Verifier returns, wrapped with the detail.
var (
	ErrUnsigned  = errors.New("not a signed blueprint")
	ErrSignature = errors.New("bad signature")
	ErrUntrusted = errors.New("signer not trusted")
	ErrWrongKey  = errors.New("signed for another node")
	ErrReplay    = errors.New("older than the last accepted revision (replay)")
	// ErrUnsignedDelete refuses a deleted key; remove with a signed empty
	// blueprint instead.
	ErrUnsignedDelete = errors.New("unsigned delete refused (publish a signed empty blueprint to remove)")
)

// Envelope is the KV value: the signed payload bytes and their signature.
type Envelope struct {
	Format  string `json:"format"`
	Payload []byte `json:"payload"` // JSON of Payload, base64 in the envelope
	Signer  string `json:"signer"`  // publisher public key (U...)
	Sig     []byte `json:"sig"`     // ed25519 over Format + "\n" + Payload
}

// Payload is what is signed.
type Payload struct {
	// Key is the node's key (<site>.<node>): a blueprint signed for one node
	// cannot be put on another's key.
	Key string `json:"key"`
	// Seq only goes up per key; agents refuse a lower one. The default is
	// the signing time in nanoseconds.
	Seq    uint64    `json:"seq"`
	Signed time.Time `json:"signed"`
	// Blueprint is the signed content, exact bytes (base64 in JSON): a
	// blueprint, or under OutputsFormat a cloud status.
	Blueprint []byte `json:"blueprint"`
}

// Sign wraps blueprint bytes for key in an envelope signed with the seed of
// a publisher key. seq 0 means the current time in nanoseconds.
func Sign(seed []byte, key string, seq uint64, blueprint []byte) ([]byte, error) {
	return SignAs(Format, seed, key, seq, blueprint)
}

// SignAs is Sign for content of another format (OutputsFormat).
func SignAs(format string, seed []byte, key string, seq uint64, content []byte) ([]byte, error) {
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("sign: publisher seed: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	if seq == 0 {
		seq = uint64(now.UnixNano())
	}
	payload, err := json.Marshal(Payload{Key: key, Seq: seq, Signed: now, Blueprint: content})
	if err != nil {
		return nil, err
	}
	sig, err := kp.Sign(signed(format, payload))
	if err != nil {
		return nil, err
	}
	return json.Marshal(Envelope{Format: format, Payload: payload, Signer: pub, Sig: sig})
}

func signed(format string, payload []byte) []byte {
	return append([]byte(format+"\n"), payload...)
}

// Open checks an envelope's signature against the trusted keys and that it
// was made for key, and returns its payload. It does not check freshness.
func Open(trusted map[string]bool, key string, value []byte) (*Payload, error) {
	return OpenAs(Format, trusted, key, value)
}

// OpenAs is Open for envelopes of another format (OutputsFormat).
func OpenAs(format string, trusted map[string]bool, key string, value []byte) (*Payload, error) {
	var env Envelope
	if err := json.Unmarshal(value, &env); err != nil || env.Format != format {
		if format == Format {
			return nil, ErrUnsigned
		}
		return nil, unsignedError(format)
	}
	if !trusted[env.Signer] {
		return nil, fmt.Errorf("%w: %q", ErrUntrusted, env.Signer)
	}
	kp, err := nkeys.FromPublicKey(env.Signer)
	if err != nil {
		return nil, fmt.Errorf("%w: signer %q: %v", ErrSignature, env.Signer, err)
	}
	if err := kp.Verify(signed(format, env.Payload), env.Sig); err != nil {
		return nil, fmt.Errorf("%w from %s: %v", ErrSignature, env.Signer, err)
	}
	var p Payload
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrSignature, err)
	}
	if p.Key != key {
		return nil, fmt.Errorf("%w: for %q, found at %q", ErrWrongKey, p.Key, key)
	}
	return &p, nil
}

// Content returns the content of an envelope of format WITHOUT checking
// its signature, for display and for readers that do not verify; ok is
// false when value is not such an envelope.
func Content(format string, value []byte) (content []byte, ok bool) {
	var env Envelope
	if json.Unmarshal(value, &env) != nil || env.Format != format {
		return nil, false
	}
	var p Payload
	if json.Unmarshal(env.Payload, &p) != nil {
		return nil, false
	}
	return p.Blueprint, true
}

// unsignedError is ErrUnsigned for formats other than blueprints, with a
// message that does not call the content a blueprint.
type unsignedError string

func (e unsignedError) Error() string        { return "not signed as " + string(e) }
func (e unsignedError) Is(target error) bool { return target == ErrUnsigned }

// Trusted checks publisher public keys and returns them as the set Open
// takes. An empty list is an error: it would refuse everything silently.
func Trusted(keys []string) (map[string]bool, error) {
	if len(keys) == 0 {
		return nil, errors.New("sign: no trusted publisher keys")
	}
	out := map[string]bool{}
	for _, k := range keys {
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("sign: trusted key %q is not a publisher public key (U...)", k)
		}
		out[k] = true
	}
	return out, nil
}

// Verifier checks envelopes at an agent and remembers, on disk, the highest
// sequence accepted per key, so a replay is refused across restarts too.
type Verifier struct {
	format  string
	trusted map[string]bool
	path    string

	mu    sync.Mutex
	state map[string]seen
}

type seen struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"` // of the payload: the same envelope again is fine
}

// NewVerifier trusts the given publisher public keys and keeps its state in
// stateDir/signatures.json.
func NewVerifier(trusted []string, stateDir string) (*Verifier, error) {
	return newVerifier(Format, trusted, filepath.Join(stateDir, "signatures.json"))
}

// NewOutputsVerifier checks the cloud outputs the hub signed with one of
// the trusted keys (the site bundle's hub-outputs.pub) and keeps its state
// in stateDir/cloud-signatures.json; Verify's key is <site>.<node>.<config>.
func NewOutputsVerifier(trusted []string, stateDir string) (*Verifier, error) {
	return newVerifier(OutputsFormat, trusted, filepath.Join(stateDir, "cloud-signatures.json"))
}

func newVerifier(format string, trusted []string, path string) (*Verifier, error) {
	keys, err := Trusted(trusted)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", err, format)
	}
	v := &Verifier{format: format, trusted: keys, path: path, state: map[string]seen{}}
	raw, err := os.ReadFile(v.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, err
	default:
		if err := json.Unmarshal(raw, &v.state); err != nil {
			return nil, fmt.Errorf("sign: %s: %w", v.path, err)
		}
	}
	return v, nil
}

// Verify has the signature of agent.Config.Verify: it returns the blueprint
// bytes of a valid, trusted, fresh envelope, or an error saying why not.
//
// A nil value is a delete of the key, which carries no signature: it is
// refused (ErrUnsignedDelete); to remove everything from a node, publish a
// signed blueprint with an empty spec.
func (v *Verifier) Verify(key string, revision uint64, value []byte) ([]byte, error) {
	if value == nil {
		return nil, fmt.Errorf("%w: revision %d", ErrUnsignedDelete, revision)
	}
	p, err := OpenAs(v.format, v.trusted, key, value)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(value)
	hash := hex.EncodeToString(h[:])
	v.mu.Lock()
	defer v.mu.Unlock()
	last, ok := v.state[key]
	switch {
	case !ok || p.Seq > last.Seq:
	case p.Seq == last.Seq && hash == last.Hash:
		return p.Blueprint, nil // the same envelope again (restart, re-watch)
	default:
		return nil, fmt.Errorf("%w: revision %d has seq %d, already accepted seq %d", ErrReplay, revision, p.Seq, last.Seq)
	}
	v.state[key] = seen{Seq: p.Seq, Hash: hash}
	if err := v.save(); err != nil {
		// Refuse rather than accept something we could not remember: after
		// a restart an older envelope would otherwise pass.
		v.state[key] = last
		return nil, fmt.Errorf("sign: recording seq: %w", err)
	}
	return p.Blueprint, nil
}

func (v *Verifier) save() error {
	b, _ := json.Marshal(v.state)
	// Durably: a torn state file would stop the agent from starting.
	return fileio.WriteFile(v.path, b, 0o600, fileio.MkdirAll(0o700))
}

// NewPublisher makes a publisher key pair: its seed signs, its public key
// goes into the trusted keys of sites.
func NewPublisher() (seed []byte, public string, err error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", err
	}
	seed, _ = kp.Seed()
	public, _ = kp.PublicKey()
	return seed, public, nil
}
