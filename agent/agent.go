// Package agent runs on every node: it watches the node's key in the site's
// blueprints bucket, hands each revision to the reconcile engine, and
// reports the node's status to the site's status bucket.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/events"
	"github.com/alpha-edge/alpha/agent/facts"
	"github.com/alpha-edge/alpha/agent/health"
	"github.com/alpha-edge/alpha/agent/status"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

// Config is what an agent needs.
type Config struct {
	Site, Node string
	NATSURL    string // the site leaf, nats://HOST:PORT (comma-separated for several)
	Root       string // prefixes every managed path; "/" in production
	StateDir   string
	Log        *slog.Logger
	// NATSOptions add credentials and TLS.
	NATSOptions []nats.Option
	// Resync is the period of the full reconcile and of the level check of
	// the key (default 30s); drift watchers act sooner.
	Resync time.Duration
	// Verify, if set, checks a KV entry (a signed envelope) and returns the
	// blueprint bytes inside; an error refuses the revision. A delete is
	// offered with a nil value; an error refuses it too.
	Verify func(key string, revision uint64, value []byte) ([]byte, error)
	// VerifyCloud, if set, checks a value of the cloud bucket (the hub's
	// signed envelope, key <site>.<node>.<config>) and returns the status
	// inside; an error refuses it and the last good outputs stay in use.
	// With Verify set and VerifyCloud nil, every cloud output is refused.
	VerifyCloud func(key string, revision uint64, value []byte) ([]byte, error)
	// Gate, if set, replaces the agent's own maintenance gate (windows from
	// the blueprint, holds from the site's holds bucket).
	Gate engine.Gate
	// Sandbox leaves the host alone: no sysctl values, firewall, links,
	// modules or systemd units (the dev stack, which must not touch the
	// machine it runs on). Files and containers still work.
	Sandbox bool
	// PodmanURI is podman's REST socket (default unix:///run/podman/podman.sock).
	PodmanURI string
	// SystemdBus is the D-Bus address of systemd ("" = the system bus).
	SystemdBus string
	// Journal is the journalctl command line that follows units' journal
	// for spec.telemetry.logs (default journalctl).
	Journal []string
}

// Agent is a node's agent.
type Agent struct {
	cfg     Config
	log     *slog.Logger
	key     string
	drivers []driver.Driver
	wiring  *wiring
	eng     *engine.Engine

	// collector assembles and publishes the node's status from the
	// pieces the engine and the other parts export.
	collector *status.Collector
	monitor   atomic.Pointer[health.Monitor]    // health of the applied blueprint; nil before
	facts     atomic.Pointer[streams.NodeFacts] // the machine's, read once at start

	mu      sync.Mutex
	events  *events.Publisher
	offered uint64 // last revision offered; 0 none
	deleted bool
	// reconnected restarts the watch: a watch's consumer lived on the
	// server we lost and can stay deaf after a leaf restart.
	reconnected chan struct{}
	// denied are the operations the leaf refused lately: logged at WARN
	// and shown in status, never retried quietly.
	denied natsutil.Denials
}

// New builds an agent and its drivers.
func New(cfg Config) (*Agent, error) {
	if err := streams.ValidID("site", cfg.Site); err != nil {
		return nil, err
	}
	if err := streams.ValidID("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: --state is required")
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	// Paths under the root leave this process (container mounts go to
	// podman, whose working directory is not ours): make them absolute.
	var err error
	if cfg.Root, err = filepath.Abs(cfg.Root); err != nil {
		return nil, fmt.Errorf("agent: --root %q: %w", cfg.Root, err)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 30 * time.Second
	}
	log := cfg.Log.With("site", cfg.Site, "node", cfg.Node)
	a := &Agent{cfg: cfg, log: log, key: streams.Key(cfg.Site, cfg.Node), reconnected: make(chan struct{}, 1)}
	a.drivers, a.wiring, err = buildDrivers(cfg, log)
	if err != nil {
		return nil, err
	}
	// The engine's status first, then each part's piece.
	a.collector = status.New(cfg.Site, cfg.Node, []status.Exporter{
		a.wiring.gate.Export,
		func(ns *streams.NodeStatus, _ engine.Status) { a.wiring.compliance.Export(ns) },
		status.Denied(a.denied.Recent),
		func(ns *streams.NodeStatus, _ engine.Status) {
			if mon := a.monitor.Load(); mon != nil {
				mon.Export(ns)
			}
		},
		func(ns *streams.NodeStatus, _ engine.Status) { ns.Facts = a.facts.Load() },
	})
	a.denied.Log, a.denied.OnNew = log, a.collector.Refresh
	var gate engine.Gate = a.wiring.gate
	if cfg.Gate != nil {
		gate = cfg.Gate
	}
	a.eng, err = engine.New(engine.Config{
		Drivers:  a.drivers,
		StateDir: filepath.Join(cfg.StateDir, "engine"),
		Log:      log,
		Resync:   cfg.Resync,
		Gate:     gate,
		OnStatus: a.collector.Engine,
		OnRepair: a.onRepair,
		Prepare:  a.wiring.prepare,
		Health:   a.solutionHealth,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Run reconciles and talks to the site until ctx is done. The engine runs
// from its persisted state at once; NATS is joined whenever it is reachable.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent starting", "nats", a.cfg.NATSURL, "root", a.cfg.Root, "state", a.cfg.StateDir)
	f, err := facts.Collect(ctx)
	if err != nil {
		a.log.Warn("some machine facts unreadable; reported empty", "err", err)
	}
	a.facts.Store(&f)
	// An agent that cannot reach its leaf keeps the node on its last
	// blueprint; say so once, then every 30 s, not at every 250 ms retry.
	var lastUnreachable atomic.Int64
	opts := append([]nats.Option{
		nats.ConnectHandler(func(nc *nats.Conn) { a.log.Info("connected to the site leaf", "url", nc.ConnectedUrlRedacted()) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				a.log.Warn("lost the site leaf; the node stays on its applied blueprint", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			now := time.Now().UnixNano()
			if last := lastUnreachable.Load(); now-last >= int64(30*time.Second) && lastUnreachable.CompareAndSwap(last, now) {
				a.log.Warn("site leaf unreachable; retrying", "url", a.cfg.NATSURL, "err", err)
			}
		}),
		nats.Name("alpha-agent-" + a.key),
		nats.ErrorHandler(a.denied.Handler(nil)),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(2 * time.Second),
		nats.MaxPingsOutstanding(2),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			a.log.Info("reconnected to the site leaf", "url", nc.ConnectedUrlRedacted())
			select {
			case a.reconnected <- struct{}{}:
			default:
			}
		}),
	}, a.cfg.NATSOptions...)
	// With RetryOnFailedConnect this returns at once even with the leaf
	// down; the engine below then runs from the node's persisted state.
	nc, err := nats.Connect(a.cfg.NATSURL, opts...)
	if err != nil {
		return fmt.Errorf("agent: nats %s: %w", a.cfg.NATSURL, err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, a.cfg.Site)
	if err != nil {
		return err
	}
	// Artifacts come from the site's mirror of the hub's store: no site
	// credential reaches the hub's API, and the mirror serves offline.
	a.wiring.artifacts.set(artifacts.NewObjectStore(nc, a.cfg.Site, streams.ArtifactsBucket))
	pub := events.New(js, a.cfg.Site, a.cfg.Node, a.log, 0)
	if err := pub.Spool(filepath.Join(a.cfg.StateDir, "events-spool.json")); err != nil {
		a.log.Error("drift events spool unreadable; its events are lost", "err", err)
	}
	a.mu.Lock()
	a.events = pub
	a.mu.Unlock()

	var wg sync.WaitGroup
	defer wg.Wait()
	for _, fn := range []func(context.Context){
		func(ctx context.Context) { a.eng.Run(ctx) },
		func(ctx context.Context) { pub.Run(ctx) },
		func(ctx context.Context) { a.collector.Publish(ctx, js, a.key, a.log) },
		func(ctx context.Context) { a.connectCloud(ctx, js) },
		func(ctx context.Context) { a.connectHolds(ctx, js) },
		func(ctx context.Context) { a.observeLoop(ctx, nc) },
	} {
		wg.Add(1)
		go func() { defer wg.Done(); fn(ctx) }()
	}
	a.watchLoop(ctx, js)
	return nil
}

// onRepair publishes each drift repair as an event (buffered while the leaf
// is unreachable).
func (a *Agent) onRepair(r engine.Repair) {
	a.mu.Lock()
	pub := a.events
	a.mu.Unlock()
	if pub != nil {
		pub.OnRepair(r)
	}
}

// connectHolds follows the node's key in the site's holds bucket, so an
// operator's hold (alpha hold) takes effect at once, uplink or not. Until
// the bucket is reached, the hold state loaded from the node's disk (New)
// is in force.
func (a *Agent) connectHolds(ctx context.Context, js jetstream.JetStream) {
	for ctx.Err() == nil {
		// Every request has a deadline: one the leaf refuses (permissions)
		// is never answered.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(actx, streams.HoldsBucket) // the leaf makes it
		cancel()
		if err == nil {
			if err = a.wiring.holds.Watch(ctx, kv, func() { a.eng.Trigger("hold changed") }); err == nil {
				a.eng.Trigger("holds reachable")
				return
			}
		}
		a.log.Debug("holds bucket not reachable yet", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchLoop follows the node's key. A watch can silently stop across server
// restarts, so a periodic Get checks the level as well.
func (a *Agent) watchLoop(ctx context.Context, js jetstream.JetStream) {
	for ctx.Err() == nil {
		err := a.watchOnce(ctx, js)
		if ctx.Err() != nil {
			return
		}
		a.log.Debug("blueprint watch ended; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (a *Agent) watchOnce(ctx context.Context, js jetstream.JetStream) error {
	kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := kv.Watch(wctx, a.key)
	if err != nil {
		return err
	}
	defer w.Stop()
	level := time.NewTicker(a.cfg.Resync)
	defer level.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.reconnected:
			return errors.New("reconnected")
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e != nil {
				a.offer(e)
			}
		case <-level.C:
			e, err := kv.Get(ctx, a.key)
			switch {
			case err == nil:
				a.offer(e)
			case errors.Is(err, jetstream.ErrKeyNotFound):
				a.mu.Lock()
				gone := a.offered > 0 && !a.deleted
				a.mu.Unlock()
				if gone {
					// Deleted while the watch was deaf; the revision is unknown.
					a.offerDeleted(0)
				}
			default:
				return err
			}
		}
	}
}

func (a *Agent) offer(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		a.offerDeleted(e.Revision())
		return
	}
	a.mu.Lock()
	same := a.offered == e.Revision() && !a.deleted
	a.offered, a.deleted = e.Revision(), false
	a.mu.Unlock()
	if same {
		return
	}
	c := engine.Candidate{Revision: e.Revision(), Data: e.Value()}
	if a.cfg.Verify != nil {
		data, err := a.cfg.Verify(e.Key(), e.Revision(), e.Value())
		if err != nil {
			c.Err = fmt.Errorf("signature: %w", err)
		}
		c.Data = data
	}
	a.eng.Offer(c)
}

func (a *Agent) offerDeleted(rev uint64) {
	a.mu.Lock()
	if a.deleted {
		a.mu.Unlock()
		return
	}
	if rev == 0 {
		rev = a.offered + 1
	}
	a.offered, a.deleted = rev, true
	a.mu.Unlock()
	if a.cfg.Verify != nil {
		// A delete carries no signature: with signatures required it could
		// wipe the node on anyone's word. Verify decides (nil value).
		if _, err := a.cfg.Verify(a.key, rev, nil); err != nil {
			a.eng.Offer(engine.Candidate{Revision: rev, Err: fmt.Errorf("signature: %w", err)})
			return
		}
	}
	a.eng.Offer(engine.Candidate{Revision: rev, Deleted: true})
}

// solutionHealth is the engine's reading of the solution's health for its
// rollback guard: the monitor evaluates it now, so what judges a revision
// is what status.Health shows, without waiting for the next telemetry
// sample.
func (a *Agent) solutionHealth(ctx context.Context, bp *blueprint.Blueprint) (float64, string) {
	mon := a.monitor.Load()
	if mon == nil || a.appliedBlueprint() != bp {
		// The observers start on the applied blueprint's change; until
		// then there is no evaluation of this revision.
		return 0, "health not evaluated yet"
	}
	rep := mon.Update(ctx, nil)
	return rep.Solution, rep.Why()
}

// Status returns the node's status as last assembled.
func (a *Agent) Status() streams.NodeStatus { return a.collector.Status() }

// connectCloud hands the cloud resolver the site's mirror of the hub's cloud
// bucket once the leaf answers.
func (a *Agent) connectCloud(ctx context.Context, js jetstream.JetStream) {
	for ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		kv, err := js.KeyValue(actx, streams.CloudBucket)
		cancel()
		if err == nil {
			a.wiring.cloud.connect(cloudref.NewKV(kv, a.cfg.Site, a.cfg.Node))
			a.eng.Trigger("cloud outputs reachable")
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}
