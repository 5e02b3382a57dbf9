// Package cloudref resolves ${cloud.NAME.OUTPUT} references in a node's
// blueprint from the outputs the hub published, and reports each cloud
// configuration and the resources that wait on one.
package cloudref

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/streams"
)

// Source gives the hub's status of this node's cloud configurations.
type Source interface {
	// Entry returns the status of one configuration, nil when the hub has
	// published none. digest is the configuration's digest in the node's
	// blueprint: a verifying source refuses outputs made for another one.
	Entry(ctx context.Context, config, digest string) (*streams.CloudStatus, error)
}

// Notifier is implemented by sources that can tell when an entry changes.
type Notifier interface {
	Watch(ctx context.Context, notify func()) error
}

// ErrRefused is wrapped by Entry when the bucket's value fails the
// integrity check: unsigned, signed by another key, or signed for another
// site, node or configuration. Entry then returns the last good status, if
// any, with the error, and the Resolver keeps using it and reports why.
var ErrRefused = errors.New("cloud outputs refused")

// ErrOtherRevision is the ErrRefused of genuine outputs made for another
// revision of the configuration than the node's blueprint holds (neither it
// nor the revision of the last good outputs): a node whose blueprint is
// signed takes outputs only of that very configuration, not of one someone
// else had the hub provision under the same name. It is a wait, too: the
// hub or the blueprint may be a moment ahead of the other.
var ErrOtherRevision = fmt.Errorf("%w: they are outputs of another revision of the configuration", ErrRefused)

// Verify checks a value of the cloud bucket for key (<site>.<node>.<config>)
// and returns the status JSON inside it; an error refuses the value. A
// sign.Verifier from sign.NewOutputsVerifier has this shape.
type Verify func(key string, revision uint64, value []byte) ([]byte, error)

// KV reads the site's mirror of the hub's cloud bucket (or the hub's bucket
// itself). A mirror serves reads offline, so references keep resolving
// after the first provisioning even with the uplink down.
//
// The bucket is writable by the tenant's administrator, not only by the
// hub; with Verified, only values the hub signed for this very key count.
type KV struct {
	kv         jetstream.KeyValue
	site, node string
	verify     Verify

	// stored, if set, gives the last accepted status kept elsewhere (the
	// node's disk), for after a restart.
	stored func(config string) *streams.CloudStatus

	mu   sync.Mutex
	last map[string]*streams.CloudStatus // last accepted per configuration, when verifying
}

var _ Source = (*KV)(nil)
var _ Notifier = (*KV)(nil)

// NewKV reads this node's keys of kv, trusting what they hold (no
// signatures: --insecure and the dev stack).
func NewKV(kv jetstream.KeyValue, site, node string) *KV { return &KV{kv: kv, site: site, node: node} }

// Verified makes k accept only the values verify passes, and returns k.
// stored, if not nil, answers for the last accepted status when this KV has
// accepted none yet (the node's copy from before a restart).
func (k *KV) Verified(verify Verify, stored func(config string) *streams.CloudStatus) *KV {
	k.verify, k.stored = verify, stored
	return k
}

// Entry reads site.node.config. When verifying, a refused value (or a
// deleted key: the hub never deletes one, it publishes "destroyed") yields
// the last accepted status, if any, and an error wrapping ErrRefused.
func (k *KV) Entry(ctx context.Context, config, digest string) (*streams.CloudStatus, error) {
	key := streams.CloudKey(k.site, k.node, config)
	e, err := k.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		if last := k.lastGood(config); last != nil {
			return last, fmt.Errorf("%w: %s was deleted from the cloud bucket, but the hub never deletes a status", ErrRefused, key)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if k.verify == nil {
		data := e.Value()
		if c, ok := sign.Content(sign.OutputsFormat, data); ok {
			data = c // a hub that signs, an agent that does not check
		}
		var st streams.CloudStatus
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, fmt.Errorf("cloud status %s: %w", key, err)
		}
		return &st, nil
	}
	data, err := k.verify(key, e.Revision(), e.Value())
	if err != nil {
		return k.lastGood(config), fmt.Errorf("%w: %s revision %d: %w", ErrRefused, key, e.Revision(), err)
	}
	var st streams.CloudStatus
	if err := json.Unmarshal(data, &st); err != nil {
		return k.lastGood(config), fmt.Errorf("%w: %s revision %d: signed content: %w", ErrRefused, key, e.Revision(), err)
	}
	if last := k.lastGood(config); !forRevision(&st, digest, last) {
		return last, fmt.Errorf("%w (%s revision %d: outputs of digest %s, the blueprint's configuration is %s)",
			ErrOtherRevision, key, e.Revision(), short(st.AppliedDigest), short(digest))
	}
	k.mu.Lock()
	if k.last == nil {
		k.last = map[string]*streams.CloudStatus{}
	}
	k.last[config] = &st
	k.mu.Unlock()
	return &st, nil
}

// forRevision reports whether st's outputs may fill in a blueprint whose
// configuration has digest: they were applied from that configuration, or
// from the one the last good outputs came from (the hub has not caught up
// with a new revision yet), or there are none.
func forRevision(st *streams.CloudStatus, digest string, last *streams.CloudStatus) bool {
	return len(st.Outputs) == 0 || digest == "" || st.AppliedDigest == digest ||
		(last != nil && last.AppliedDigest != "" && st.AppliedDigest == last.AppliedDigest)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	if digest == "" {
		return "(none)"
	}
	return digest
}

func (k *KV) lastGood(config string) *streams.CloudStatus {
	if k.verify == nil {
		return nil
	}
	k.mu.Lock()
	last := k.last[config]
	k.mu.Unlock()
	if last == nil && k.stored != nil {
		last = k.stored(config)
	}
	return last
}

// Watch calls notify on every change to this node's keys until ctx is done.
func (k *KV) Watch(ctx context.Context, notify func()) error {
	w, err := k.kv.Watch(ctx, streams.CloudKey(k.site, k.node, "*"), jetstream.UpdatesOnly())
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("cloud status watch closed")
			}
			if e != nil {
				notify()
			}
		}
	}
}

// Static is a Source held in memory, for tests and the dev stack.
type Static struct {
	mu      sync.Mutex
	entries map[string]*streams.CloudStatus
	notify  []chan struct{}
}

// Set publishes (or, with nil, removes) one configuration's status.
func (s *Static) Set(config string, st *streams.CloudStatus) {
	s.mu.Lock()
	if s.entries == nil {
		s.entries = map[string]*streams.CloudStatus{}
	}
	if st == nil {
		delete(s.entries, config)
	} else {
		s.entries[config] = st
	}
	for _, c := range s.notify {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// Entry returns what Set stored.
func (s *Static) Entry(_ context.Context, config, _ string) (*streams.CloudStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.entries[config], nil
}

// Watch calls notify after every Set.
func (s *Static) Watch(ctx context.Context, notify func()) error {
	c := make(chan struct{}, 1)
	s.mu.Lock()
	s.notify = append(s.notify, c)
	s.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c:
			notify()
		}
	}
}

// Resolver plugs into the engine twice: Prepare as engine.Config.Prepare,
// and the Resolver itself among the drivers, where it plans nothing (the
// hub provisions) but reports and watches.
//
// A resource whose references cannot be resolved yet is left out of the
// blueprint the drivers see, and reported; the rest of the blueprint
// applies. Prepare never fails: a bad reference must not hold back
// unrelated resources.
type Resolver struct {
	src Source
	log *slog.Logger

	mu     sync.Mutex
	report []driver.Resource
}

var _ driver.Driver = (*Resolver)(nil)
var _ driver.Reporter = (*Resolver)(nil)
var _ driver.Watcher = (*Resolver)(nil)

// New builds a Resolver over src.
func New(src Source, log *slog.Logger) *Resolver {
	if log == nil {
		log = slog.Default()
	}
	return &Resolver{src: src, log: log}
}

// Name is the blueprint section.
func (r *Resolver) Name() string { return "cloud" }

// Plan has nothing to do on the node: the hub provisions.
func (r *Resolver) Plan(context.Context, *blueprint.Blueprint) (driver.Plan, error) { return nil, nil }

// Watch wakes the engine when the hub publishes new outputs, so a workload
// picks them up without waiting for the periodic resync.
func (r *Resolver) Watch(ctx context.Context, notify func(reason string)) error {
	n, ok := r.src.(Notifier)
	if !ok {
		<-ctx.Done()
		return nil
	}
	return n.Watch(ctx, func() { notify("cloud outputs changed") })
}

// Report returns the state found by the last Prepare: one resource per
// cloud configuration, plus each resource waiting on a missing output.
func (r *Resolver) Report(context.Context) []driver.Resource {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]driver.Resource(nil), r.report...)
}

// Prepare returns bp with every reference replaced by its output. bp itself
// is not changed. Resources with a reference that cannot be resolved are
// left out and reported (pending while the hub provisions, failed when the
// output is gone or never existed).
func (r *Resolver) Prepare(ctx context.Context, bp *blueprint.Blueprint) (*blueprint.Blueprint, error) {
	entries := map[string]*streams.CloudStatus{}
	refused := map[string]error{}
	var report []driver.Resource
	for _, c := range bp.Spec.Cloud {
		e, err := r.src.Entry(ctx, c.Name, c.Digest())
		switch {
		case errors.Is(err, ErrRefused):
			// e, if any, is the last good status: keep using it.
			r.log.Warn("refusing cloud outputs", "config", c.Name, "keeping_last_good", e != nil, "err", err)
			refused[c.Name] = err
		case err != nil:
			r.log.Warn("reading cloud status", "config", c.Name, "err", err)
		}
		entries[c.Name] = e
		report = append(report, configResource(c, e, err))
	}
	if !hasRefs(bp) {
		r.setReport(report)
		return bp, nil
	}
	out, err := clone(bp)
	if err != nil {
		return nil, err
	}
	problems := map[string][]string{}
	pending := map[string]bool{}
	out.Spec.CloudRefFields(func(path, id string, v *string) {
		s, missing := blueprint.ExpandCloudRefs(*v, func(ref blueprint.CloudRef) (string, bool) {
			e := entries[ref.Config]
			if e == nil {
				return "", false
			}
			val, ok := e.Outputs[ref.Output]
			return val, ok
		})
		*v = s
		for _, m := range missing {
			why, wait := explain(m, entries[m.Config], refused[m.Config])
			problems[id] = append(problems[id], fmt.Sprintf("%s: needs %s: %s", path, m, why))
			if _, seen := pending[id]; !seen || !wait {
				pending[id] = wait
			}
		}
	})
	drop(&out.Spec, problems)
	ids := make([]string, 0, len(problems))
	for id := range problems {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		res := driver.Resource{ID: id, State: "failed", Message: strings.Join(problems[id], "; ")}
		if pending[id] {
			res.State = "pending"
		}
		report = append(report, res)
	}
	r.setReport(report)
	return out, nil
}

func (r *Resolver) setReport(res []driver.Resource) {
	r.mu.Lock()
	r.report = res
	r.mu.Unlock()
}

func hasRefs(bp *blueprint.Blueprint) bool {
	found := false
	// CloudRefFields writes back what it read; on bp that changes nothing.
	bp.Spec.CloudRefFields(func(_, _ string, v *string) {
		if strings.Contains(*v, "${cloud.") {
			found = true
		}
	})
	return found
}

// clone deep-copies a blueprint so Prepare never edits the engine's copy.
func clone(bp *blueprint.Blueprint) (*blueprint.Blueprint, error) {
	data, err := json.Marshal(bp)
	if err != nil {
		return nil, err
	}
	var out blueprint.Blueprint
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// explain says why a reference is unresolved, and whether that is a wait
// (the hub is still provisioning) rather than a failure.
func explain(ref blueprint.CloudRef, e *streams.CloudStatus, refused error) (string, bool) {
	name := fmt.Sprintf("configuration %q", ref.Config)
	switch {
	case e == nil && errors.Is(refused, ErrOtherRevision):
		return name + " has no outputs of this revision yet: " + refused.Error(), true
	case e == nil && refused != nil:
		return name + " has no accepted outputs: " + refused.Error(), false
	case e == nil:
		return name + " is not provisioned yet", true
	case e.Phase == streams.CloudDestroyed:
		return name + " was destroyed; its outputs are gone", false
	case e.Phase == streams.CloudFailed && e.AppliedDigest == "":
		return name + " failed: " + firstLine(e.Error), false
	case e.AppliedDigest == "":
		return fmt.Sprintf("%s is being provisioned (%s)", name, e.Phase), true
	default:
		return fmt.Sprintf("%s has no output %q", name, ref.Output), false
	}
}

// configResource reports one cloud configuration as the hub last saw it.
func configResource(c blueprint.CloudConfig, e *streams.CloudStatus, err error) driver.Resource {
	res := driver.Resource{ID: blueprint.ResourceID("cloud", c.Name)}
	switch {
	case errors.Is(err, ErrOtherRevision) && e != nil:
		res.State, res.Health = "pending", 0.5
		res.Message = err.Error() + "; keeping the last good outputs"
	case errors.Is(err, ErrOtherRevision):
		res.State, res.Message = "pending", err.Error()+"; waiting for the hub"
	case errors.Is(err, ErrRefused) && e != nil:
		res.State, res.Health = "failed", 0.5
		res.Message = err.Error() + "; keeping the last good outputs"
	case errors.Is(err, ErrRefused):
		res.State, res.Message = "failed", err.Error()+"; no good outputs to use"
	case err != nil:
		res.State, res.Message = "pending", "cannot read the hub's status: "+err.Error()
	case e == nil:
		res.State, res.Message = "pending", "not provisioned yet"
	case e.Phase == streams.CloudFailed:
		res.State, res.Message = "failed", e.Error
	case e.Phase == streams.CloudDestroyed:
		res.State, res.Message = "failed", "destroyed by the hub; its outputs are gone"
	case e.Phase == streams.CloudDrifted:
		res.State, res.Health, res.Message = "drifted", 0.5, e.Message
	case e.AppliedDigest != c.Digest():
		res.State, res.Health = "pending", 0.5
		res.Message = fmt.Sprintf("the hub is provisioning this revision (%s); outputs are from an earlier one", e.Phase)
	case e.Phase == streams.CloudApplied:
		names := make([]string, 0, len(e.Outputs))
		for n := range e.Outputs {
			names = append(names, n)
		}
		sort.Strings(names)
		res.State, res.Health = "ok", 1
		res.Message = fmt.Sprintf("applied %d time(s); outputs: %s", e.Applies, strings.Join(names, ", "))
	default:
		res.State, res.Health, res.Message = "pending", 0.5, string(e.Phase)
	}
	return res
}

// drop removes the resources that cannot be resolved from the spec the
// drivers see: they must not start with a literal ${cloud...} in them.
func drop(s *blueprint.Spec, problems map[string][]string) {
	if len(problems) == 0 {
		return
	}
	cs := s.Containers[:0]
	for _, c := range s.Containers {
		if _, bad := problems[blueprint.ResourceID("container", c.Name)]; !bad {
			cs = append(cs, c)
		}
	}
	s.Containers = cs
	fs := s.Files[:0]
	for _, f := range s.Files {
		if _, bad := problems[blueprint.ResourceID("file", f.Path)]; !bad {
			fs = append(fs, f)
		}
	}
	s.Files = fs
	us := s.Units[:0]
	for _, u := range s.Units {
		if _, bad := problems[blueprint.ResourceID("unit", u.Name)]; !bad {
			us = append(us, u)
		}
	}
	s.Units = us
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
