// Package hub runs the central NATS server with JetStream (domain "hub") that
// holds every site's blueprints and receives their status and telemetry.
package hub

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/ingest"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// leafHandshakeTimeout bounds a leaf's TLS handshake and CONNECT at the
// hub (nats-server's default is 2 s each); leaf.Config uses the same bound
// on its side.
const leafHandshakeTimeout = 10 * time.Second

// Config is what a hub needs.
type Config struct {
	StoreDir   string
	Listen     string // client listener HOST:PORT
	LeafListen string // leafnode listener HOST:PORT
	Log        *slog.Logger
	// Options, if set, is called on the server options before start, so
	// other packages (accounts, TLS, clustering) can add what they own.
	Options func(*server.Options) error
	// ClientOptions are used for the hub's own in-process connection.
	ClientOptions []nats.Option
	// Replicas for buckets and streams (3 in a cluster).
	Replicas int
	// Limits of the uplink streams, applied at every start (zero: defaults).
	Limits streams.HubLimits
	// LeafConnectRate is how many site uplinks a second may start their
	// TLS handshake (0: DefaultLeafConnectRate; negative: no bound). Only
	// with TLS on the leafnode listener.
	LeafConnectRate int
	// PingInterval is how often the hub checks each connection (sites'
	// uplinks, clients) is alive; three unanswered checks close it (0:
	// 2 s, so a dead site is seen unlinked in seconds, not nats-server's
	// minutes). Sites on links that stall want a longer one.
	PingInterval time.Duration
	// NoRebalance turns off, in a cluster, the moving of site links from
	// a member that holds clearly more than its share to the others
	// (rebalance.go); a hub alone never moves links.
	NoRebalance bool
	// RebalanceEvery is how often a member compares its links with its
	// peers' (0: DefaultRebalanceEvery).
	RebalanceEvery time.Duration
	// SystemOptions connect the hub's own coordination between cluster
	// members (the rebalancer's link counts) to the system account, where
	// no tenant's user can publish or listen: the operator's system user
	// under operator mode. Nil (open mode): the hub's client connection.
	SystemOptions []nats.Option
}

// Hub is a running hub.
type Hub struct {
	Server *server.Server
	cfg    Config
	opts   *server.Options

	mu      sync.Mutex
	tenants []*tenant // served accounts: connection and ingest

	stopGate      context.CancelFunc // the admission gate's rate keeper, if any
	stopRebalance context.CancelFunc // the rebalancer, in a cluster
}

// tenant is one account the hub serves: its bootstrap connection, kept
// open for its ingest.
type tenant struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	account string // the account's name (its public key under operator mode)
	ingest  *ingest.Service
}

// tenantStreams is each served account's JetStream, by account name.
func (h *Hub) tenantStreams() map[string]jetstream.JetStream {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]jetstream.JetStream, len(h.tenants))
	for _, t := range h.tenants {
		if t.account != "" {
			out[t.account] = t.js
		}
	}
	return out
}

// connAccount is the account of one of the hub's own connections.
func (h *Hub) connAccount(nc *nats.Conn) string {
	id, err := nc.GetClientID()
	if err != nil {
		return ""
	}
	cz, err := h.Server.Connz(&server.ConnzOptions{CID: id, Username: true})
	if err != nil || len(cz.Conns) == 0 {
		return ""
	}
	// Connz leaves the open mode's global account unnamed; Jsz names it.
	return cmp.Or(cz.Conns[0].Account, "$G")
}

// Start runs the server and creates the buckets and streams every site needs.
func Start(ctx context.Context, cfg Config) (*Hub, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.PingInterval < 0 {
		return nil, fmt.Errorf("hub: --ping %v: want a positive interval", cfg.PingInterval)
	}
	if cfg.RebalanceEvery < 0 {
		return nil, fmt.Errorf("hub: --rebalance-every %v: want a positive interval", cfg.RebalanceEvery)
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("hub: --store is required")
	}
	host, port, err := natsutil.SplitAddr("--listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	lhost, lport, err := natsutil.SplitAddr("--leaf-listen", cfg.LeafListen)
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:      "hub",
		Host:            host,
		Port:            port,
		JetStream:       true,
		JetStreamDomain: streams.HubDomain,
		StoreDir:        cfg.StoreDir,
		NoSigs:          true,
		PingInterval:    cmp.Or(cfg.PingInterval, 2*time.Second),
		MaxPingsOut:     3,
		// Each site has a mirror consumer on every hub bucket it mirrors.
		// nats-server caps a stream at 1,000 consumers unless the stream
		// or the account sets a limit, and a tenant without a consumer
		// limit (-1) counts as "not set": its 1,000th site would be
		// refused. The tenant's own limit is the one that should hold.
		JetStreamLimits: server.JSLimitOpts{DefaultMaxConsumers: -1},
		// Each leaf's permissions were a cached sublist: at its connect
		// the hub checks every subscription of the tenant (the sites'
		// mirror consumers) against them and kept up to 1,024 answers per
		// leaf. At 1,000 idle sites that cache was 259 of the hub's 448 MB
		// of heap (~0.26 MB a site). Without caches a check walks a
		// permission trie of a dozen entries, and the account's own
		// sublist (a few subscriptions per site) stays quick to match at
		// the message rates of a fleet.
		NoSublistCache: true,
		LeafNode: server.LeafNodeOpts{
			Host: lhost,
			Port: lport,
			// Without this the hub tells leaves its own address and they
			// reconnect around any proxy or NAT they were given.
			NoAdvertise: true,
			// Sites talk to the hub, never to each other, so one site's
			// subscriptions are not sent to the others. Without it every
			// leafnode connect walked and permission-checked every site's
			// interest in the tenant account: at 1,000 registered sites a
			// connect took ~10 s of hub CPU (65% of it in
			// initLeafNodeSmapAndSendSubs), leaves hit their TLS and auth
			// deadlines and reconnected in a storm that never settled; and
			// each uplink cached up to 1,024 permission checks of other
			// sites' subjects (~250 KB of hub heap per site at 300 sites).
			IsolateLeafnodeInterest: true,
			// A fleet reconnecting at once (the hub restarted, a member
			// lost) makes every leaf's TLS handshake and CONNECT wait on
			// the same few cores. With the 2 s defaults a handshake that
			// was nearly done was cut off and the leaf started over, so
			// the work done for it was lost and the storm fed itself (at
			// 1,000 sites: tens of thousands of closed connections a
			// minute that did not settle). A slow handshake that
			// completes is cheaper than a fast one repeated.
			TLSTimeout:  leafHandshakeTimeout.Seconds(),
			AuthTimeout: leafHandshakeTimeout.Seconds(),
		},
	}
	if cfg.Options != nil {
		if err := cfg.Options(opts); err != nil {
			return nil, err
		}
	}
	var g *gate
	gctx, stopGate := context.WithCancel(context.Background())
	if tc := opts.LeafNode.TLSConfig; tc != nil && cfg.LeafConnectRate >= 0 {
		g = newGate(gctx, cmp.Or(cfg.LeafConnectRate, DefaultLeafConnectRate))
		g.install(tc)
	}
	s, err := server.NewServer(opts)
	if err != nil {
		stopGate()
		return nil, fmt.Errorf("hub: %w", err)
	}
	if err := natsutil.Start(s, cfg.Log.With("role", "hub")); err != nil {
		stopGate()
		return nil, err
	}
	h := &Hub{Server: s, cfg: cfg, opts: opts, stopGate: stopGate}
	if g != nil {
		go g.follow(gctx, s, cfg.Log.With("role", "hub"))
	}
	if err := h.ServeTenant(ctx); err != nil {
		h.Shutdown()
		return nil, err
	}
	if err := h.startRebalance(); err != nil {
		h.Shutdown()
		return nil, err
	}
	return h, nil
}

// Connect opens an in-process client connection to the hub.
func (h *Hub) Connect(extra ...nats.Option) (*nats.Conn, error) {
	// The handshake is in memory: its 2 s default only ever ran out on a
	// hub starved by a fleet reconnecting at once (see connectRetryable).
	opts := append([]nats.Option{nats.InProcessServer(h.Server), nats.Name("alpha-hub"), nats.Timeout(20 * time.Second)},
		h.cfg.ClientOptions...)
	opts = append(opts, extra...)
	// For up to two minutes: a fleet of 1,000 reconnecting at once kept a
	// hub this busy for about a minute, and giving up exits the hub, whose
	// restart brings the same storm.
	giveUp := time.Now().Add(2 * time.Minute)
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect("", opts...)
		if err == nil || !connectRetryable(err) || time.Now().After(giveUp) {
			return nc, err
		}
		h.cfg.Log.Warn("the hub's own connection failed while connecting; retrying", "attempt", attempt, "err", err)
		time.Sleep(min(time.Duration(attempt)*500*time.Millisecond, 5*time.Second))
	}
}

// connectRetryable tells a failed in-process connect that only the hub's
// load caused. The restarted hub of a 1,000-site benchmark, its fleet
// reconnecting at once, exited with "tenant acme: io: read/write on closed
// pipe" (the server gave up on its own connection's CONNECT), then, once
// that was retried, with "read pipe: i/o timeout" and "nats: expected
// 'PONG', got 'PING'"; a cluster member under load did the same. None is
// a wrong setting: only an authorization error is final.
func connectRetryable(err error) bool {
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) ||
		errors.Is(err, nats.ErrAccountAuthExpired) || errors.Is(err, nats.ErrNoServers) {
		return false
	}
	msg := strings.ToLower(err.Error())
	return !strings.Contains(msg, "authorization") && !strings.Contains(msg, "authentication") && !strings.Contains(msg, "permissions")
}

// ClientURL is where clients (the nats CLI, alpha status) connect.
func (h *Hub) ClientURL() string { return h.Server.ClientURL() }

// LeafURL is where site leaves connect.
func (h *Hub) LeafURL() string {
	// The server writes a randomly chosen port (-1) back into its options.
	host := h.opts.LeafNode.Host
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return fmt.Sprintf("nats-leaf://%s", net.JoinHostPort(host, strconv.Itoa(h.opts.LeafNode.Port)))
}

// Limits are the uplink streams' limits the hub applies at start.
func (h *Hub) Limits() *streams.HubLimits { return &h.cfg.Limits }

// Replicas is how many copies the hub keeps of its buckets and streams.
func (h *Hub) Replicas() int { return max(h.cfg.Replicas, 1) }

// Shutdown stops the server and waits for it.
func (h *Hub) Shutdown() {
	h.mu.Lock()
	for _, t := range h.tenants {
		t.ingest.Stop()
		t.nc.Close()
	}
	h.tenants = nil
	h.mu.Unlock()
	if h.stopGate != nil {
		h.stopGate()
	}
	if h.stopRebalance != nil {
		h.stopRebalance()
	}
	h.Server.Shutdown()
	h.Server.WaitForShutdown()
}

// ServeTenant makes an account's buckets and streams (BootstrapLimits with
// the hub's limits), removes what hubs before the ingest kept per site
// (leaf.Upgrade), and serves the account's ingest for as long as the hub
// runs. opts authenticate the hub's connection in that account (none: the
// hub's own ClientOptions, its first tenant or the open account).
func (h *Hub) ServeTenant(ctx context.Context, opts ...nats.Option) error {
	nc, err := h.Connect(opts...)
	if err != nil {
		return fmt.Errorf("hub: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	// A cluster member starts before a JetStream meta leader exists, and
	// a hub restarted while hundreds of sites reconnect answers late: API
	// requests go unanswered, so retry short attempts for a while instead
	// of one long wait.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = BootstrapLimits(actx, js, max(h.cfg.Replicas, 1), &h.cfg.Limits)
		if err == nil {
			var sites []string
			if sites, err = leaf.Upgrade(actx, js); len(sites) > 0 {
				h.cfg.Log.Info("site uplinks moved to the ingest; their landing streams removed", "sites", len(sites))
			}
		}
		cancel()
		if err == nil || ctx.Err() != nil || time.Now().After(deadline) {
			break
		}
		h.cfg.Log.Debug("hub bootstrap not done yet; retrying", "err", err)
		time.Sleep(250 * time.Millisecond)
	}
	if err != nil {
		nc.Close()
		return err
	}
	in, err := ingest.Serve(nc, h.cfg.Log)
	if err != nil {
		nc.Close()
		return err
	}
	h.mu.Lock()
	h.tenants = append(h.tenants, &tenant{nc: nc, js: js, account: h.connAccount(nc), ingest: in})
	h.mu.Unlock()
	return nil
}

// Bootstrap creates the hub's buckets and streams if they are missing. It is
// idempotent; an existing stream's sources (one per site) are kept.
func Bootstrap(ctx context.Context, js jetstream.JetStream, replicas int) error {
	return BootstrapLimits(ctx, js, replicas, nil)
}

// BootstrapLimits is Bootstrap that also sets the uplink streams' byte
// limits to lim on existing streams (nil: new streams get the defaults,
// existing ones keep theirs).
func BootstrapLimits(ctx context.Context, js jetstream.JetStream, replicas int, lim *streams.HubLimits) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	kvs := []jetstream.KeyValueConfig{
		{Bucket: streams.BlueprintsBucket, History: streams.BlueprintHistory, Storage: jetstream.FileStorage,
			Description: "desired blueprints, key <site>.<node>", Replicas: replicas},
		{Bucket: streams.CloudBucket, History: 4, Storage: jetstream.FileStorage,
			Description: "cloud outputs and phases, key <site>.<node>.<config>", Replicas: replicas},
		// Hub-only buckets of fleets and rollouts: no site mirrors them.
		{Bucket: streams.LabelsBucket, History: 4, Storage: jetstream.FileStorage,
			Description: "operator labels per node, key <site>.<node>", Replicas: replicas},
		{Bucket: streams.StagedBucket, History: 1, Storage: jetstream.FileStorage,
			Description: "fleet blueprints rendered and signed by alpha fleet apply, key <fleet>.<site>.<node>", Replicas: replicas},
		{Bucket: streams.RolloutsBucket, History: 8, Storage: jetstream.FileStorage,
			Description: "rollout state per fleet, key <fleet>", Replicas: replicas},
		{Bucket: streams.QuotasBucket, History: 1, Storage: jetstream.FileStorage,
			Description: "per-site uplink quotas the ingest enforces, key <site>", Replicas: replicas},
	}
	for _, c := range kvs {
		if _, err := js.KeyValue(ctx, c.Bucket); err == nil {
			continue
		}
		if _, err := js.CreateKeyValue(ctx, c); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("hub: bucket %s: %w", c.Bucket, err)
		}
	}
	if _, err := js.ObjectStore(ctx, streams.ArtifactsBucket); err != nil {
		if _, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: streams.ArtifactsBucket,
			Description: "image archives and executables for sites", Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
			return fmt.Errorf("hub: object store %s: %w", streams.ArtifactsBucket, err)
		}
	}
	// The streams the ingest writes the sites' uplinks to.
	var want streams.HubLimits
	if lim != nil {
		want = *lim
	}
	for _, name := range streams.Uplinks() {
		cfg := streams.HubUplinkConfig(name, replicas, want)
		s, err := js.Stream(ctx, name)
		if err == nil {
			if err := applyUplinkConfig(ctx, js, s, cfg, lim != nil); err != nil {
				return err
			}
			continue
		}
		if _, err := js.CreateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("hub: stream %s: %w", name, err)
		}
	}
	return nil
}

// applyUplinkConfig brings an existing uplink stream's ingest subjects
// (a hub from before the ingest had none) and, with limits, its byte limit
// and discard policy to want's, keeping its sources (air-gap bundles).
func applyUplinkConfig(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, want jetstream.StreamConfig, limits bool) error {
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	cfg := info.Config
	same := slices.Equal(cfg.Subjects, want.Subjects) && cfg.SubjectTransform != nil && *cfg.SubjectTransform == *want.SubjectTransform
	if same && (!limits || cfg.MaxBytes == want.MaxBytes && cfg.Discard == want.Discard) {
		return nil
	}
	cfg.Subjects, cfg.SubjectTransform = want.Subjects, want.SubjectTransform
	if limits {
		cfg.MaxBytes, cfg.Discard = want.MaxBytes, want.Discard
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("hub: stream %s: subjects %v, max bytes %d: %w", cfg.Name, cfg.Subjects, cfg.MaxBytes, err)
	}
	return nil
}
