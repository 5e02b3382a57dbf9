package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("hub", "run the hub: NATS with JetStream (domain hub), blueprints, status, telemetry", runHub)
	register("leaf", "run a site leaf node that mirrors the site's blueprints and buffers its data", runLeaf)
	register("agent", "run a node's agent: watch its blueprint and reconcile", runAgent)
	register("site", "run leaf and agent in one process (single-node site); add, revoke: see 'site -h'", runSite)
}

// logger logs text to stderr at the level in ALPHA_LOG (debug, info, warn).
func logger() *slog.Logger {
	level := slog.LevelInfo
	level.UnmarshalText([]byte(os.Getenv("ALPHA_LOG")))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

func runHub(ctx context.Context, args []string) error {
	fs := newFlags("hub")
	store := fs.String("store", "/var/lib/alpha/hub", "JetStream store directory")
	cf := addCloudFlags(fs)
	mf := addMetricsFlags(fs)
	uf := addUIFlags(fs, "")
	listen := fs.String("listen", "0.0.0.0:4222", "client listener HOST:PORT")
	leafListen := fs.String("leaf-listen", "0.0.0.0:7422", "leafnode listener HOST:PORT")
	ping := fs.Duration("ping", 2*time.Second, "how often the hub checks each site's link and client is alive; 3 unanswered close it (longer for sites on links that stall)")
	admit := fs.Int("leaf-connect-rate", hub.DefaultLeafConnectRate,
		"most site uplinks admitted to their TLS handshake per second, in bursts of as many; fewer when each connect walks more subscriptions or the hub falls behind, and sources take turns: a fleet reconnecting at once (hub restart) is taken in turn instead of all missing their deadlines; -1: no bound")
	sec := addSecureFlags(fs, roleHub)
	clf := addClusterFlags(fs)
	hl := addHubLimitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := hl.Validate(); err != nil {
		return err
	}
	log := logger()
	hc := hub.Config{StoreDir: *store, Listen: *listen, LeafListen: *leafListen, Log: log, Limits: *hl, PingInterval: *ping, LeafConnectRate: *admit}
	if err := clf.apply(&hc); err != nil {
		return err
	}
	op, err := sec.hub(&hc)
	if err != nil {
		return err
	}
	if err := clf.secure(&hc, sec.tls, op); err != nil {
		return err
	}
	h, err := hub.Start(ctx, hc)
	if err != nil {
		return err
	}
	if err := bootstrapTenants(ctx, h, op, log); err != nil {
		h.Shutdown()
		return err
	}
	log.Info("hub security", "operator mode", op != nil, "tls", !sec.insecure)
	// The bound addresses, also when a listener was given port -1: tests
	// read them from this line instead of guessing a free port.
	log.Info("hub ready", "clients", h.ClientURL(), "leafnodes", h.LeafURL(), "cluster", clusterAddr(h))
	stopCloud, err := cf.start(ctx, h, *store, op, log)
	if err != nil {
		stopCloud()
		h.Shutdown()
		return err
	}
	stopRollouts, err := startRollouts(ctx, h, op, log)
	if err != nil {
		stopCloud()
		h.Shutdown()
		return err
	}
	if err := mf.start(ctx, h, op, log); err != nil {
		stopRollouts()
		stopCloud()
		h.Shutdown()
		return err
	}
	stopUI, uiURL, err := uf.start(ctx, h, op, sec.tls, log)
	if err != nil {
		stopRollouts()
		stopCloud()
		h.Shutdown()
		return err
	}
	if uiURL != "" {
		log.Info("dashboard ready", "url", uiURL)
	}
	<-ctx.Done()
	stopUI()
	stopRollouts()
	stopCloud()
	h.Shutdown()
	return nil
}

// clusterAddr is the route listener's bound address, empty without
// --cluster.
func clusterAddr(h *hub.Hub) string {
	if a := h.Server.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

type leafFlags struct {
	site, hub, store, listen, compression, stickDirs *string
	ping                                             *time.Duration
	limits                                           *streams.SiteLimits
}

func addLeafFlags(fs *flag.FlagSet) leafFlags {
	lim := streams.DefaultSiteLimits
	// The site keeps its log lines apart from metrics and events, under
	// limits of their own.
	fs.DurationVar(&lim.LogsMaxAge, "logs-max-age", lim.LogsMaxAge, "how long the site's LOGS stream keeps journal and container lines")
	fs.Var(byteSize{&lim.LogsMaxBytes}, "logs-max-bytes", "bytes of lines the site's LOGS stream keeps; oldest dropped first")
	return leafFlags{
		limits: &lim,
		site:   fs.String("site", "", "site id (required)"),
		hub:    fs.String("hub", "", "hub leafnode URL(s), comma-separated: nats-leaf://HOST:7422; none: an air-gapped site fed by 'alpha bundle import'"),
		store:  fs.String("store", "/var/lib/alpha/leaf", "JetStream store directory"),
		listen: fs.String("listen", "127.0.0.1:4222", "client listener for agents, HOST:PORT"),
		stickDirs: fs.String("stick-dir", strings.Join(bundle.DefaultDirs, ","),
			"directories, comma-separated, the leaf imports bundles from and writes uplink bundles to (alpha bundle; where sticks are mounted)"),
		ping: fs.Duration("ping", 2*time.Second,
			"how often the leaf checks its uplink is alive; 2 unanswered drop it and it reconnects (longer for a satellite or cellular link that stalls)"),
		compression: fs.String("uplink-compression", "off",
			"uplink compression: off (no s2 buffers at the hub: 1-6 MB per site), s2_auto (level by round trip: for a cellular or satellite link), s2_fast, s2_better, s2_best"),
	}
}

func (f leafFlags) config() leaf.Config {
	var hubs []string
	if *f.hub != "" {
		hubs = []string{*f.hub}
	}
	return leaf.Config{Site: *f.site, HubURLs: hubs, StoreDir: *f.store, Listen: *f.listen, Compression: *f.compression,
		PingInterval: *f.ping, Limits: *f.limits, Log: logger()}
}

func runLeaf(ctx context.Context, args []string) error {
	fs := newFlags("leaf")
	lf := addLeafFlags(fs)
	sec := addSecureFlags(fs, roleLeaf)
	if err := fs.Parse(args); err != nil {
		return err
	}
	lc := lf.config()
	if err := sec.leaf(&lc); err != nil {
		return err
	}
	l, err := leaf.Start(ctx, lc)
	if err != nil {
		return err
	}
	if sec.bundle != "" && !sec.insecure {
		if err := startBundleService(ctx, l, lc, sec.bundle, splitList(*lf.stickDirs), lc.Log); err != nil {
			l.Shutdown()
			return err
		}
	}
	logger().Info("leaf ready", "site", lc.Site, "clients", l.ClientURL(), "air-gapped", l.AirGapped())
	<-ctx.Done()
	l.Shutdown()
	return nil
}

func runAgent(ctx context.Context, args []string) error {
	fs := newFlags("agent")
	site := fs.String("site", "", "site id (required)")
	node := fs.String("node", "", "node id (required)")
	url := fs.String("nats", "nats://127.0.0.1:4222", "site leaf URL")
	root := fs.String("root", "/", "prefix of every managed path")
	state := fs.String("state", "/var/lib/alpha/agent", "agent state directory")
	sec := addSecureFlags(fs, roleAgent)
	rt := addRuntimeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ac := agent.Config{Site: *site, Node: *node, NATSURL: *url, Root: *root, StateDir: *state, Log: logger()}
	rt.apply(&ac)
	if err := sec.agent(&ac, false); err != nil {
		return err
	}
	a, err := agent.New(ac)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// siteCommands are admin subcommands of "alpha site"; other files add to it.
var siteCommands = map[string]func(ctx context.Context, args []string) error{}

func runSite(ctx context.Context, args []string) error {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, ok := siteCommands[args[0]]
		if !ok {
			return fmt.Errorf("unknown subcommand %q", args[0])
		}
		return sub(ctx, args[1:])
	}
	fs := newFlags("site")
	lf := addLeafFlags(fs)
	node := fs.String("node", "", "node id (required)")
	root := fs.String("root", "/", "prefix of every managed path")
	state := fs.String("state", "", "agent state directory (default STORE/agent)")
	sec := addSecureFlags(fs, roleLeaf|roleAgent)
	rt := addRuntimeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	sec.runtime = rt
	sec.stickDirs = splitList(*lf.stickDirs)
	if *state == "" {
		*state = filepath.Join(*lf.store, "agent")
	}
	lc := lf.config()
	if err := sec.leaf(&lc); err != nil {
		return err
	}
	return runLeafAndAgentSecure(ctx, lc, *node, *root, *state, sec)
}

// runLeafAndAgent runs a leaf and one agent against it, open (dev).
func runLeafAndAgent(ctx context.Context, lc leaf.Config, node, root, state, podman string) error {
	return runLeafAndAgentSecure(ctx, lc, node, root, state, nil, withPodman(podman))
}

// agentOption adjusts the agent's configuration after the flags set it.
type agentOption func(*agent.Config)

// withPodman points the agent at a podman socket.
func withPodman(uri string) agentOption { return func(c *agent.Config) { c.PodmanURI = uri } }

// runLeafAndAgentSecure is runLeafAndAgent with production flags.
func runLeafAndAgentSecure(ctx context.Context, lc leaf.Config, node, root, state string, sec *secureFlags, opts ...agentOption) error {
	l, err := leaf.Start(ctx, lc)
	if err != nil {
		return err
	}
	defer l.Shutdown()
	if sec != nil && sec.bundle != "" && !sec.insecure {
		if err := startBundleService(ctx, l, lc, sec.bundle, sec.stickDirs, lc.Log); err != nil {
			return err
		}
	}
	lc.Log.Info("leaf ready", "site", lc.Site, "clients", l.ClientURL(), "air-gapped", l.AirGapped())
	// The dev stack (sec == nil) must not touch its host's kernel.
	ac := agent.Config{Site: lc.Site, Node: node, NATSURL: l.ClientURL(), Root: root, StateDir: state, Log: lc.Log, Sandbox: sec == nil}
	if sec != nil {
		sec.runtime.apply(&ac)
	}
	for _, o := range opts {
		o(&ac)
	}
	if sec != nil {
		if err := sec.agent(&ac, true); err != nil {
			return err
		}
	}
	a, err := agent.New(ac)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// runtimeFlags say where the node's container and service runtimes answer.
type runtimeFlags struct{ podman, bus *string }

func addRuntimeFlags(fs *flag.FlagSet) runtimeFlags {
	return runtimeFlags{
		podman: fs.String("podman", "unix:///run/podman/podman.sock", "podman REST API socket (spec.containers)"),
		bus:    fs.String("systemd-bus", "", "D-Bus address of systemd (spec.units); empty: the system bus"),
	}
}

func (r runtimeFlags) apply(c *agent.Config) {
	if r.podman != nil {
		c.PodmanURI, c.SystemdBus = *r.podman, *r.bus
	}
}
