// Package cloud is the hub's cloud reconciler: it provisions the spec.cloud
// Terraform configurations of every node's blueprint and publishes their
// phase and outputs for the sites, which hold no cloud credentials.
package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/throttle"
	"github.com/alpha-edge/alpha/streams"
)

// Names and types of the contract (package streams), under the names this
// package has always used.
const (
	StatusBucket = streams.CloudBucket
	StateBucket  = streams.TFStateBucket
	LockBucket   = streams.CloudLocksBucket
)

// Key is the key of one configuration in the status bucket, the lock bucket
// and (as a prefix) the state store.
func Key(site, node, config string) string { return streams.CloudKey(site, node, config) }

type (
	// Status is the value of a configuration's key in the status bucket.
	Status = streams.CloudStatus
	// Phase is where a configuration stands.
	Phase = streams.CloudPhase
	// PlanSummary counts what the last plan wanted.
	PlanSummary = streams.PlanSummary
)

// Phases of a configuration, as published.
const (
	PhasePlanned    = streams.CloudPlanned
	PhaseApplying   = streams.CloudApplying
	PhaseApplied    = streams.CloudApplied
	PhaseFailed     = streams.CloudFailed
	PhaseDrifted    = streams.CloudDrifted
	PhaseDestroying = streams.CloudDestroying
	PhaseDestroyed  = streams.CloudDestroyed
	// PhaseInvalid is the phase of Key(site, node, RefusedConfig): the
	// node's newest blueprint was refused (unsigned, undecodable, invalid).
	PhaseInvalid = streams.CloudInvalid
)

// same reports whether two statuses say the same thing, ignoring when.
func same(s, o Status) bool {
	s.Updated, o.Updated = time.Time{}, time.Time{}
	s.Hub, o.Hub = "", ""
	return reflect.DeepEqual(s, o)
}

// Config builds a Reconciler.
type Config struct {
	// JS is the hub's JetStream (domain hub).
	JS jetstream.JetStream
	// Terraform is the binary: a path, or a name looked up in PATH
	// (default "terraform").
	Terraform string
	// WorkDir holds the working directories, one per configuration. It is a
	// cache: state lives in the StateBucket.
	WorkDir string
	// ProviderMirror, if set, is a directory laid out as for
	// "terraform providers mirror"; providers are installed only from it.
	ProviderMirror string
	// Replan is how often an applied configuration is planned again to
	// detect cloud drift (default 10m, jittered).
	Replan time.Duration
	// RetryMin is the first retry delay after a failure (default 5s); it
	// doubles up to Replan.
	RetryMin time.Duration
	// LeaseTTL is how long a crashed hub's lease blocks others (default 30s).
	LeaseTTL time.Duration
	// Parallel bounds the Terraform runs at once on this hub (default 2).
	Parallel int
	// Replicas of the buckets this package creates (default 1).
	Replicas int
	// Instance names this hub in leases and statuses (default host:pid).
	Instance string
	// Decode turns a blueprints value into a blueprint (default
	// blueprint.Parse); in operator mode SignedOnly, so only blueprints
	// signed by the tenant's publisher key are provisioned.
	Decode func(key string, data []byte) (*blueprint.Blueprint, error)
	// OutputsSeed, if set, is the hub's outputs nkey seed (SU...): every
	// status is published signed with it, and only values it signed are read
	// back (see outputs.go). Operator mode sets it; agents trust its public key.
	OutputsSeed []byte
	// Confine runs Terraform as an unprivileged user with resource limits;
	// nil runs it as the hub's own user (a hub not running as root).
	Confine *Confinement
	// Timeout bounds one pass of Terraform steps (init to apply) of one
	// configuration (default 1h); Terraform is interrupted past it.
	Timeout time.Duration
	// AllowExec lets configurations use provisioners (local-exec,
	// remote-exec) and the external data source. Off, they are refused
	// before any Terraform step runs.
	AllowExec bool
	// Env is added to Terraform's otherwise empty environment (cloud
	// credentials for this tenant's providers).
	Env map[string]string
	Log *slog.Logger
}

// Stats counts what a Reconciler did, for tests and metrics.
type Stats struct {
	Plans      uint64
	Applies    uint64
	Destroys   uint64
	LeaseWaits uint64
}

// Reconciler watches every blueprint and keeps each (site, node,
// configuration) provisioned: init, plan, apply only when the plan is not
// empty, publish outputs; destroy once the configuration leaves. It is
// level-based: every pass plans against the real cloud.
type Reconciler struct {
	cfg Config
	log *slog.Logger
	sem chan struct{}
	wg  sync.WaitGroup

	blueprints jetstream.KeyValue
	status     jetstream.KeyValue
	locks      jetstream.KeyValue
	state      jetstream.ObjectStore
	cliConfig  string
	signer     *outputsSigner // nil: statuses are published unsigned

	mu          sync.Mutex
	workers     map[string]*worker
	desired     map[string]map[string]blueprint.CloudConfig // blueprint key -> config name
	undecodable map[string]bool                             // blueprint keys whose newest value was refused
	refusals    map[string]bool                             // status keys of published refusals

	tfMu      sync.Mutex
	tfPath    string
	tfExec    string // tfPath, or the confining wrapper around it
	tfMissing bool   // logged once; reset when it appears

	plans, applies, destroys, waits atomic.Uint64
}

// New checks the configuration; Run does the work.
func New(cfg Config) (*Reconciler, error) {
	if cfg.JS == nil {
		return nil, errors.New("cloud: Config.JS is required")
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("cloud: Config.WorkDir is required")
	}
	if cfg.Terraform == "" {
		cfg.Terraform = "terraform"
	}
	if cfg.Replan <= 0 {
		cfg.Replan = 10 * time.Minute
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = 5 * time.Second
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 30 * time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 2
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Instance == "" {
		h, _ := os.Hostname()
		cfg.Instance = fmt.Sprintf("%s:%d", h, os.Getpid())
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Hour
	}
	if cfg.Confine != nil {
		c := *cfg.Confine
		if err := c.defaults(); err != nil {
			return nil, err
		}
		cfg.Confine = &c
	}
	if cfg.Decode == nil {
		cfg.Decode = func(_ string, data []byte) (*blueprint.Blueprint, error) { return blueprint.Parse(data) }
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	signer, err := newOutputsSigner(cfg.OutputsSeed)
	if err != nil {
		return nil, err
	}
	return &Reconciler{
		signer:      signer,
		cfg:         cfg,
		log:         cfg.Log.With("component", "cloud", "hub", cfg.Instance),
		sem:         make(chan struct{}, cfg.Parallel),
		workers:     map[string]*worker{},
		desired:     map[string]map[string]blueprint.CloudConfig{},
		undecodable: map[string]bool{},
		refusals:    map[string]bool{},
	}, nil
}

// Stats returns the counters so far.
func (r *Reconciler) Stats() Stats {
	return Stats{Plans: r.plans.Load(), Applies: r.applies.Load(), Destroys: r.destroys.Load(), LeaseWaits: r.waits.Load()}
}

// Run reconciles until ctx is done. A missing Terraform is logged once and
// reported per configuration; it does not stop Run.
func (r *Reconciler) Run(ctx context.Context) error {
	if err := r.open(ctx); err != nil {
		return err
	}
	_ = r.terraformReady(ctx) // logs once if missing
	defer r.wg.Wait()
	for {
		err := r.watch(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("blueprints watch ended; watching again", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// open creates this package's buckets and waits for the blueprints bucket,
// which the hub creates.
func (r *Reconciler) open(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Join(r.cfg.WorkDir, "runs"), 0o700); err != nil {
		return fmt.Errorf("cloud: work dir: %w", err)
	}
	// Terraform warns about a TF_CLI_CONFIG_FILE that does not exist, and the
	// warning breaks terraform-exec's parsing (FIELD-NOTES): always point it
	// at a file this package wrote.
	r.cliConfig = filepath.Join(r.cfg.WorkDir, "terraformrc")
	rc := ""
	if r.cfg.ProviderMirror != "" {
		// Only the mirror: an air-gapped hub must not try a registry.
		rc = fmt.Sprintf("provider_installation {\n  filesystem_mirror {\n    path = %q\n  }\n}\n", r.cfg.ProviderMirror)
	}
	// Readable by the confined user; it names at most the provider mirror.
	if err := os.WriteFile(r.cliConfig, []byte(rc), 0o644); err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	if err := os.Chmod(r.cliConfig, 0o644); err != nil {
		return fmt.Errorf("cloud: %w", err)
	}
	if r.cfg.Confine != nil {
		if err := r.openConfined(); err != nil {
			return err
		}
	}
	var err error
	if r.status, err = r.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: StatusBucket, History: 4, Replicas: r.cfg.Replicas,
		Description: "Alpha cloud configurations: phase, plan summary and outputs per site.node.config",
	}); err != nil {
		return fmt.Errorf("cloud: bucket %s: %w", StatusBucket, err)
	}
	if r.locks, err = r.cfg.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LockBucket, History: 1, TTL: r.cfg.LeaseTTL, Replicas: r.cfg.Replicas,
		Description: "Alpha cloud leases: one hub runs Terraform on a configuration at a time",
	}); err != nil {
		return fmt.Errorf("cloud: bucket %s: %w", LockBucket, err)
	}
	if r.state, err = r.cfg.JS.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: StateBucket, Replicas: r.cfg.Replicas,
		Description: "Alpha Terraform state and last applied configuration",
	}); err != nil {
		return fmt.Errorf("cloud: object store %s: %w", StateBucket, err)
	}
	if err := r.loadRefusals(ctx); err != nil {
		return fmt.Errorf("cloud: bucket %s: %w", StatusBucket, err)
	}
	for logged := false; ; {
		r.blueprints, err = r.cfg.JS.KeyValue(ctx, streams.BlueprintsBucket)
		if err == nil {
			return nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("cloud: bucket %s: %w", streams.BlueprintsBucket, err)
		}
		if !logged {
			r.log.Info("waiting for the blueprints bucket")
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// watch follows every blueprint; after the initial values it sweeps for
// configurations that were provisioned but no longer appear anywhere.
func (r *Reconciler) watch(ctx context.Context) error {
	w, err := r.blueprints.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watcher closed")
			}
			if e == nil {
				r.sweep(ctx)
				continue
			}
			r.onBlueprint(ctx, e)
		}
	}
}

func (r *Reconciler) onBlueprint(ctx context.Context, e jetstream.KeyValueEntry) {
	site, node, ok := strings.Cut(e.Key(), ".")
	if !ok {
		r.log.Warn("ignoring blueprint key that is not site.node", "key", e.Key())
		return
	}
	cfgs := map[string]blueprint.CloudConfig{}
	if e.Operation() == jetstream.KeyValuePut {
		bp, err := r.cfg.Decode(e.Key(), e.Value())
		if err != nil {
			// Never destroy because of a bad revision: the agent keeps running
			// the last good one, and so does the cloud.
			r.log.Warn("blueprint refused; keeping its cloud configurations as they are", "key", e.Key(), "revision", e.Revision(), "err", firstLine(err.Error()))
			r.mu.Lock()
			r.undecodable[e.Key()] = true
			r.mu.Unlock()
			r.refused(ctx, site, node, e.Revision(), err)
			return
		}
		for _, c := range bp.Spec.Cloud {
			cfgs[c.Name] = c
		}
	}
	r.accepted(ctx, site, node)
	r.setDesired(ctx, e.Key(), site, node, cfgs)
}

// setDesired records a node's configurations and wakes the workers whose
// configuration changed or left.
func (r *Reconciler) setDesired(ctx context.Context, bpKey, site, node string, cfgs map[string]blueprint.CloudConfig) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.undecodable, bpKey)
	prev := r.desired[bpKey]
	for name := range prev {
		if _, ok := cfgs[name]; !ok {
			r.workerLocked(ctx, site, node, name).set(nil)
		}
	}
	for name, c := range cfgs {
		w := r.workerLocked(ctx, site, node, name)
		if old := w.want; old == nil || !reflect.DeepEqual(*old, c) {
			w.set(&c)
		}
	}
	if len(cfgs) == 0 {
		delete(r.desired, bpKey)
	} else {
		r.desired[bpKey] = cfgs
	}
}

// sweep starts a destroy for every configuration the hub holds state or a
// live status for that no blueprint declares (removed while no hub ran).
func (r *Reconciler) sweep(ctx context.Context) {
	known := map[string]bool{}
	if infos, err := r.state.List(ctx); err == nil {
		for _, in := range infos {
			k, _, _ := strings.Cut(in.Name, "/")
			known[k] = true
		}
	} else if !errors.Is(err, jetstream.ErrNoObjectsFound) {
		r.log.Warn("listing terraform state", "err", err)
	}
	if keys, err := r.status.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			known[k] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range known {
		parts := strings.SplitN(k, ".", 3)
		if len(parts) != 3 {
			continue
		}
		bpKey := parts[0] + "." + parts[1]
		if parts[2] == RefusedConfig || r.undecodable[bpKey] {
			continue
		}
		if _, ok := r.desired[bpKey][parts[2]]; ok {
			continue
		}
		if _, running := r.workers[k]; running {
			continue
		}
		r.workerLocked(ctx, parts[0], parts[1], parts[2]).set(nil)
	}
}

// worker owns one configuration: one goroutine, so runs on it never overlap
// on this hub (the lease covers other hubs).
type worker struct {
	key, site, node, name string
	wake                  chan struct{}
	want                  *blueprint.CloudConfig // guarded by Reconciler.mu; nil: destroy
}

func (w *worker) set(c *blueprint.CloudConfig) {
	w.want = c
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (r *Reconciler) workerLocked(ctx context.Context, site, node, name string) *worker {
	k := Key(site, node, name)
	if w, ok := r.workers[k]; ok {
		return w
	}
	w := &worker{key: k, site: site, node: node, name: name, wake: make(chan struct{}, 1)}
	r.workers[k] = w
	r.wg.Add(1)
	go r.runWorker(ctx, w)
	return w
}

func (r *Reconciler) runWorker(ctx context.Context, w *worker) {
	defer r.wg.Done()
	var backoff time.Duration
	for {
		// Drain the wake that set() left, so a change during this pass wakes
		// the next one and nothing else does.
		select {
		case <-w.wake:
		default:
		}
		r.mu.Lock()
		want := w.want
		r.mu.Unlock()
		var err error
		if want == nil {
			err = r.destroy(ctx, w)
		} else {
			err = r.reconcile(ctx, w, *want)
		}
		if ctx.Err() != nil {
			return
		}
		next := throttle.Jitter(r.cfg.Replan, 10)
		if err != nil {
			backoff = min(max(2*backoff, r.cfg.RetryMin), r.cfg.Replan)
			next = throttle.Jitter(backoff, 10)
			r.log.Warn("cloud configuration not converged", "key", w.key, "retry", next.Round(time.Millisecond), "err", firstLine(err.Error()))
		} else {
			backoff = 0
			if want == nil {
				r.mu.Lock()
				if w.want == nil {
					delete(r.workers, w.key)
					r.mu.Unlock()
					return
				}
				r.mu.Unlock()
				continue
			}
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-w.wake:
			t.Stop()
		case <-t.C:
		}
	}
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}
