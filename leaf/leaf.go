// Package leaf runs a site's embedded NATS leaf node: its own JetStream domain
// holding a mirror of the site's blueprints (served from disk while the
// uplink is down) and the site's status, telemetry and events, which flow up
// to the hub whenever the link allows.
package leaf

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/throttle"
	"github.com/alpha-edge/alpha/streams"
)

// Config is what a site leaf needs.
type Config struct {
	Site string
	// HubURLs are the nats-leaf:// URLs of every hub member. None makes an
	// air-gapped site: its blueprints, cloud and artifacts stores are plain
	// ones that `alpha bundle import` fills instead of mirrors of the hub.
	HubURLs  []string
	StoreDir string
	Listen   string // client listener for agents, HOST:PORT
	Log      *slog.Logger
	Limits   streams.SiteLimits
	// Options, if set, adjusts the server options (TLS, credentials).
	Options func(*server.Options) error
	// ClientOptions are used for the leaf's own in-process connection.
	ClientOptions []nats.Option
	// NoRegister leaves the hub's mirror consumers and quotas alone: under
	// operator mode `alpha site add` registers the site and the leaf's
	// credentials may not reach the hub's API.
	NoRegister bool
	// Compression of the uplink (nats-server's leafnode modes: "off", the
	// default ""; "s2_auto" picks a level from the measured round trip;
	// "s2_fast", "s2_better", "s2_best"). Off by default because a
	// compressed link's s2 writer and reader cost the hub 0.9 MB (RSS, 20
	// idle sites) to 6 MB (heap, 30 sites after minutes) per site, and
	// s2_auto on a busy hub measures long round trips and picks the best
	// (CPU-heaviest) level: with 100 sites in one process the hub then
	// missed TLS and auth deadlines and the leaves reconnected in a storm,
	// where with off all connected in 22 s. A site on a cellular or
	// satellite link turns it on.
	Compression string
	// PingInterval is how often the leaf checks its uplink is alive; two
	// unanswered checks drop the link and it reconnects (0: 2 s, so a
	// blackholed uplink is noticed in about 4 s instead of nats-server's
	// 4 minutes, FIELD-NOTES). A link that stalls for longer than that
	// without being dead (satellite, cellular) wants a longer one: each
	// drop costs a TLS handshake and the mirrors' setup again.
	PingInterval time.Duration
	// Quota is the site's quota at the hub when the leaf registers itself
	// (without operator mode; `alpha site add --quota-*` otherwise); nil
	// keeps the hub's or the default.
	Quota *streams.SiteQuota
}

// Leaf is a running site leaf node.
type Leaf struct {
	Server *server.Server
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream // the site's own domain
	hub    jetstream.JetStream // the hub's domain, through the leaf link
	up     *nats.Conn          // the forwarders' connection (nil when air-gapped)
	cancel context.CancelFunc
	done   chan struct{}

	forwarders sync.WaitGroup

	mu     sync.Mutex
	synced bool // hub-side mirror consumers are in place for this connection
}

// Start runs the leaf. Everything local (buckets, streams, consumers) is
// created before it returns, so agents are served even when the hub has never
// been reachable; the hub side is set up in the background whenever the
// uplink is connected.
func Start(ctx context.Context, cfg Config) (*Leaf, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if err := streams.ValidID("site", cfg.Site); err != nil {
		return nil, err
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("leaf: --store is required")
	}
	if cfg.Limits == (streams.SiteLimits{}) {
		cfg.Limits = streams.DefaultSiteLimits
	}
	if cfg.Compression == "" {
		cfg.Compression = server.CompressionOff
	}
	if cfg.PingInterval < 0 {
		return nil, fmt.Errorf("leaf: --ping %v: want a positive interval", cfg.PingInterval)
	}
	host, port, err := natsutil.SplitAddr("--listen", cfg.Listen)
	if err != nil {
		return nil, err
	}
	var urls []*url.URL
	for _, raw := range cfg.HubURLs {
		for _, one := range strings.Split(raw, ",") {
			u, err := url.Parse(strings.TrimSpace(one))
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("leaf: --hub %q is not a URL like nats-leaf://hub:7422", one)
			}
			if u.Scheme == "nats" {
				u.Scheme = "nats-leaf"
			}
			urls = append(urls, u)
		}
	}
	var remotes []*server.RemoteLeafOpts
	if len(urls) > 0 {
		remotes = []*server.RemoteLeafOpts{{URLs: urls, Compression: server.CompressionOpts{Mode: cfg.Compression},
			// A hub taking a whole fleet back at once accepts and answers
			// late. nats-server's defaults gave a connect 1 s for the TCP
			// dial, 1 s from the dial to the hub's first INFO and 2 s for
			// TLS: at 1,000 sites the hub's accept queue held connections
			// whose leaf had already given up on them, so every accept was
			// wasted and the storm fed itself. A slow connect that
			// completes is cheaper than a fast one repeated; the dial
			// still fails within 3 s (one SYN retransmission) on a dead
			// link, and the hub allows the same (hub/hub.go).
			DialTimeout: 3 * time.Second, FirstInfoTimeout: 10 * time.Second, TLSTimeout: 10}}
	}
	opts := &server.Options{
		ServerName:      "leaf-" + cfg.Site,
		Host:            host,
		Port:            port,
		JetStream:       true,
		JetStreamDomain: cfg.Site,
		StoreDir:        cfg.StoreDir,
		NoSigs:          true,
		PingInterval:    cmp.Or(cfg.PingInterval, 2*time.Second),
		MaxPingsOut:     2,
		LeafNode: server.LeafNodeOpts{
			// Each leaf waits an interval of its own (0.25-0.75 s, 0.5 s on
			// average as before) before it reconnects: every site of a hub
			// member that dies notices in the same instant (the TCP
			// reset), and with one interval for all they reached the
			// survivors together (BenchmarkClusterScale: 12 of 30 sites at
			// +0.55 s; 24 of 150 within 100 ms). Attempts after a failed
			// one carry the server's own jitter.
			ReconnectInterval: throttle.Jitter(500*time.Millisecond, 50),
			Remotes:           remotes,
		},
	}
	if cfg.Options != nil {
		if err := cfg.Options(opts); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		if cfg.Compression != "" && strings.Contains(err.Error(), "compression") {
			return nil, fmt.Errorf("leaf: uplink compression %q: %w (want off, s2_auto, s2_fast, s2_better or s2_best)", cfg.Compression, err)
		}
		return nil, fmt.Errorf("leaf: %w", err)
	}
	log := cfg.Log.With("role", "leaf", "site", cfg.Site)
	if err := natsutil.Start(s, log); err != nil {
		return nil, err
	}
	l := &Leaf{Server: s, cfg: cfg, done: make(chan struct{})}
	copts := append([]nats.Option{nats.InProcessServer(s), nats.Name("alpha-leaf-" + cfg.Site), nats.MaxReconnects(-1)}, cfg.ClientOptions...)
	if l.nc, err = nats.Connect("", copts...); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("leaf: connect: %w", err)
	}
	l.js, _ = jetstream.NewWithDomain(l.nc, cfg.Site)
	l.hub, _ = jetstream.NewWithDomain(l.nc, streams.HubDomain)
	if err := l.ensureLocal(ctx); err != nil {
		l.nc.Close()
		s.Shutdown()
		return nil, err
	}
	if _, err := l.nc.Subscribe(streams.LinkSubject(cfg.Site), l.answerLink); err != nil {
		l.nc.Close()
		s.Shutdown()
		return nil, fmt.Errorf("leaf: link service: %w", err)
	}
	ctx, l.cancel = context.WithCancel(context.Background())
	go l.uplink(ctx, log)
	if !l.AirGapped() {
		// The forwarders' own connection: the hub answers them on this
		// inbox prefix, the only one the leaf may receive answers on.
		uopts := append([]nats.Option{nats.InProcessServer(s), nats.Name("alpha-uplink-" + cfg.Site), nats.MaxReconnects(-1),
			nats.CustomInboxPrefix(streams.IngestReplyPrefix(cfg.Site))}, cfg.ClientOptions...)
		if l.up, err = nats.Connect("", uopts...); err != nil {
			l.Shutdown()
			return nil, fmt.Errorf("leaf: uplink connection: %w", err)
		}
		for _, name := range streams.Uplinks() {
			l.forwarders.Add(1)
			go func() {
				defer l.forwarders.Done()
				l.forward(ctx, l.up, name, log)
			}()
		}
	}
	return l, nil
}

// answerLink tells a client (an agent's link telemetry) the uplink's state
// and what waits at the site, read from the leaf's own consumers, so no
// site credential needs the hub's API or the uplink consumers' info.
func (l *Leaf) answerLink(m *nats.Msg) {
	info := streams.LinkInfo{Connected: l.Connected(), Synced: l.Synced(), At: time.Now().UTC(), Pending: map[string]uint64{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, name := range streams.SiteStreams() {
		c, err := l.js.Consumer(ctx, name, streams.UplinkConsumer(name))
		if err != nil {
			continue
		}
		if ci, err := c.Info(ctx); err == nil {
			info.Pending[name] = ci.NumPending + uint64(ci.NumAckPending)
		}
	}
	b, _ := json.Marshal(info)
	m.Respond(b)
}

// AirGapped reports that the leaf has no uplink configured: bundles on a
// stick are its only link to the hub.
func (l *Leaf) AirGapped() bool { return len(l.cfg.HubURLs) == 0 }

// ClientURL is where agents connect.
func (l *Leaf) ClientURL() string { return l.Server.ClientURL() }

// Connected reports whether the uplink to the hub is up.
func (l *Leaf) Connected() bool { return l.Server.NumLeafNodes() > 0 }

// Synced reports whether the hub side (the mirror consumers) is in place
// for the current uplink connection.
func (l *Leaf) Synced() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced
}

// Shutdown stops the leaf and waits for it.
func (l *Leaf) Shutdown() {
	l.cancel()
	<-l.done
	l.forwarders.Wait()
	if l.up != nil {
		l.up.Close()
	}
	l.nc.Close()
	l.Server.Shutdown()
	l.Server.WaitForShutdown()
}

// ensureLocal creates the site's buckets, streams, mirror streams and the
// durable consumers the forwarders read. All of it is local: it works with
// the uplink down, and is idempotent.
func (l *Leaf) ensureLocal(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	site := l.cfg.Site
	if _, err := l.js.KeyValue(ctx, streams.StatusBucket); err != nil {
		if _, err := l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.StatusBucket, History: 1,
			Storage: jetstream.FileStorage, Description: "status of this site's nodes"}); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("leaf: status bucket: %w", err)
		}
	}
	for _, name := range streams.SiteStreams() {
		if _, err := l.js.CreateOrUpdateStream(ctx, streams.SiteStreamConfig(name, site, l.cfg.Limits)); err != nil {
			return fmt.Errorf("leaf: stream %s: %w", name, err)
		}
	}
	for _, name := range streams.Uplinks() {
		if err := ensureUplinkConsumer(ctx, l.js, site, name); err != nil {
			return fmt.Errorf("leaf: uplink consumer on %s: %w", name, err)
		}
	}
	// Holds are written at the site by its operators and read by its
	// agents; neither may create buckets.
	if _, err := l.js.KeyValue(ctx, streams.HoldsBucket); err != nil {
		if _, err := l.js.CreateKeyValue(ctx, streams.HoldsConfig); err != nil && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("leaf: holds bucket: %w", err)
		}
	}
	for _, st := range streams.Mirrored() {
		if _, err := l.js.Stream(ctx, st.Stream()); err == nil {
			// Already on disk: served offline as it is. A store that bundles
			// filled while the site had no uplink becomes the hub's mirror
			// once the uplink is up (convertBundleStores).
			continue
		}
		if l.AirGapped() {
			if err := createBundleStore(ctx, l.js, st); err != nil {
				return fmt.Errorf("leaf: %s: %w", st.Bucket, err)
			}
			continue
		}
		if err := l.createMirror(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// createMirror makes the site's mirror of a hub store, fed by the durable
// consumer `alpha site add` (or the leaf itself) made at the hub.
func (l *Leaf) createMirror(ctx context.Context, st streams.Store) error {
	site := l.cfg.Site
	cc := streams.MirrorConsumerConfig(site, st)
	mirror := &jetstream.StreamSource{
		Name:     st.Stream(),
		Domain:   streams.HubDomain,
		Consumer: &jetstream.StreamConsumerSource{Name: cc.Durable, DeliverSubject: cc.DeliverSubject},
	}
	var err error
	if st.Object {
		// nats.go makes no object store mirrors; the stream is shaped
		// as its object stores are (rollups replace an object's meta).
		_, err = l.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:        st.Stream(),
			Description: "mirror of the hub's " + st.Bucket + " object store",
			Storage:     jetstream.FileStorage,
			Discard:     jetstream.DiscardNew,
			AllowRollup: true,
			AllowDirect: true,
			Mirror:      mirror,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil
		}
	} else {
		mirror.Name = st.Bucket // the KV API names the bucket
		_, err = l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      st.Bucket,
			History:     streams.BlueprintHistory,
			Storage:     jetstream.FileStorage,
			Description: "mirror of this site's keys of the hub's " + st.Bucket,
			Mirror:      mirror,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("leaf: mirror of %s: %w", st.Bucket, err)
	}
	return nil
}

// uplink keeps the hub side in place: each time the link comes up it makes
// sure the mirror consumers exist at the hub (without operator mode the
// leaf registers itself). Level-based: it checks, it does not remember.
func (l *Leaf) uplink(ctx context.Context, log *slog.Logger) {
	defer close(l.done)
	// While the link is down the loop looks more often, so a mirror's reset
	// lost in the outage is sent again soon after the link returns
	// (resend.go); up, it only rechecks.
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	down := time.NewTicker(resetPoll)
	defer down.Stop()
	var resend time.Time // until when lost resets are looked for
	var tried time.Time  // the last setup of the hub side: at most every 250 ms
	// Level-based: even while synced, check the hub side again now and then.
	// Another site's registration racing ours, or a hub restored from an
	// older state, can take our consumers away without us hearing of it.
	recheck := time.Now().Add(throttle.Jitter(RecheckEvery, 20))
	for {
		connected := l.Connected()
		if connected && !resend.IsZero() {
			if l.resendLostResets(log) || time.Now().After(resend) {
				resend = time.Time{}
			}
		}
		if !connected {
			if l.Synced() {
				log.Warn("uplink lost; the site runs on from its own store")
			}
			l.setSynced(false)
			resend = time.Now().Add(resendWindow)
		} else if l.Synced() && time.Now().After(recheck) {
			recheck = time.Now().Add(throttle.Jitter(RecheckEvery, 20))
			if err := l.ensureHub(ctx); err != nil {
				log.Warn("hub side lost; setting it up again", "err", err)
				l.setSynced(false)
			}
		} else if !l.Synced() && time.Since(tried) >= 250*time.Millisecond {
			tried = time.Now()
			err := l.convertBundleStores(ctx, log)
			if err == nil {
				err = l.ensureHub(ctx)
			}
			if err != nil {
				log.Debug("hub side not ready yet", "err", err)
			} else {
				log.Info("uplink synced")
			}
			l.setSynced(err == nil)
		}
		tick := t.C
		if (!connected || !resend.IsZero()) && !l.AirGapped() {
			tick = down.C // an air-gapped leaf has no link to come back
		}
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
	}
}

// RecheckEvery is how often a synced leaf verifies the hub side anyway.
const RecheckEvery = 30 * time.Second

func (l *Leaf) setSynced(v bool) {
	l.mu.Lock()
	l.synced = v
	l.mu.Unlock()
}

func (l *Leaf) ensureHub(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	site := l.cfg.Site
	if l.cfg.NoRegister {
		// Under operator mode `alpha site add` made the consumers; the
		// leaf's credentials cannot reach the hub's API at all
		// (an allowed request needs interest the hub only shares with
		// users that may send to all of $JS.hub.API.CONSUMER.>).
		return nil
	}
	// Without operator mode the leaf registers itself: its mirror
	// consumers at the hub and, if given, its quota.
	return RegisterSites(ctx, l.hub, []string{site}, l.cfg.Quota)
}
