// Package prodtest starts Alpha's production setup inside one test process:
// a hub in NATS operator mode with TLS on both listeners, sites issued and
// registered as `alpha site add` does, and site leaves from their bundles.
// Tests of accounts, the chaos scenarios and the red-team suite share it, so
// "production mode" means the same thing in all of them.
package prodtest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	albundle "github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// Options shape the hub.
type Options struct {
	// Tenants are made by accounts init; the first one's admin bootstraps
	// the hub. At least one.
	Tenants []string
	// Limits of every tenant's JetStream (zero: accounts' defaults).
	Limits accounts.TenantLimits
	// Log, if set, receives the hub's log at debug level.
	Log io.Writer
	// Binary, if set, is the alpha binary to run the hub with, as `alpha
	// hub` in a child process, so its memory and CPU are its own (for
	// benchmarks); Hub is nil then. Env is added to its environment
	// (ALPHA_PPROF, GOGC).
	Binary string
	Env    []string
	// Args are more `alpha hub` flags for a Binary hub.
	Args []string
}

// Hub is a running production hub and its operator directory and PKI.
type Hub struct {
	T   testing.TB
	Dir string
	Op  *accounts.Operator
	PKI tlsfiles.Files
	Hub *hub.Hub // nil when the hub is a child process (Options.Binary)
	// Proc is the hub's child process (Options.Binary), else nil.
	Proc *Proc

	cfg hub.Config // to restart it on the same ports and store
	// clientURLs and leafURLs of hubs started elsewhere (Attach).
	clientURLs, leafURLs string

	mu     sync.Mutex
	leafs  map[*leaf.Leaf]leafSelf
	admins map[string]jetstream.JetStream
}

// leafSelf is how the leaf's own process connects to it: a key made fresh
// at each start, admitted by that leaf only.
type leafSelf struct {
	site string
	opts []nats.Option
}

// Start starts the hub; it is shut down when the test ends.
func Start(t testing.TB, o Options) *Hub {
	t.Helper()
	dir := t.TempDir()
	lim := o.Limits
	if lim == (accounts.TenantLimits{}) {
		lim = accounts.DefaultTenantLimits
	}
	op, err := accounts.InitLimits(filepath.Join(dir, "operator"), "test", o.Tenants, lim)
	check.NoError(t, err)
	pki, err := testpki.Write(dir)
	check.NoError(t, err)
	log := stack.Log()
	if o.Log != nil {
		log = slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	store := filepath.Join(dir, "hub")
	if o.Binary != "" {
		args := []string{"hub", "--store", store, "--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1",
			"--operator-dir", op.Dir, "--tls-cert", pki.Cert, "--tls-key", pki.Key}
		args = append(args, o.Args...)
		p := &Hub{T: t, Dir: dir, Op: op, PKI: pki, Proc: startProc(t, o.Binary, o.Env, o.Log, args)}
		return p
	}
	cfg := hub.Config{
		StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: log,
		Options: func(so *server.Options) error {
			if err := op.HubOptions(filepath.Join(store, "resolver"))(so); err != nil {
				return err
			}
			return pki.Hub(so)
		},
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds(o.Tenants[0]))},
	}
	h, err := hub.Start(context.Background(), cfg)
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	p := &Hub{T: t, Dir: dir, Op: op, PKI: pki, Hub: h, cfg: cfg}
	for _, tn := range o.Tenants[1:] {
		check.NoError(t, h.ServeTenant(context.Background(), nats.UserCredentials(op.AdminCreds(tn))))
	}
	return p
}

// Restart stops the hub and starts it again from its store on the same
// client and leafnode ports, so leaves and admin connections come back by
// themselves.
func (p *Hub) Restart() {
	p.T.Helper()
	if err := p.TryRestart(); err != nil {
		p.T.Fatal(err)
	}
}

// TryRestart is Restart that returns, rather than fails the test on, a hub
// process that exits or is not ready within 2 minutes (a benchmark reports
// that as its finding).
func (p *Hub) TryRestart() error {
	p.T.Helper()
	if p.clientURLs != "" {
		return errors.New("prodtest: an attached hub is restarted member by member, not by TryRestart")
	}
	if p.Proc != nil {
		return p.Proc.restart(p.T)
	}
	cfg := p.cfg
	cfg.Listen = hostPort(p.T, p.Hub.ClientURL())
	cfg.LeafListen = hostPort(p.T, p.Hub.LeafURL())
	p.Hub.Shutdown()
	var h *hub.Hub
	check.Rebind(p.T, func() (err error) {
		h, err = hub.Start(context.Background(), cfg)
		return err
	})
	p.T.Cleanup(h.Shutdown)
	p.mu.Lock()
	p.Hub = h
	p.mu.Unlock()
	return nil
}

func hostPort(t testing.TB, raw string) string {
	u, err := url.Parse(raw)
	check.NoError(t, err)
	return u.Host
}

// Attach is a Hub for hubs started elsewhere, e.g. the members of a
// cluster of `alpha hub` processes (chaos.StartHubCluster), with the
// operator and PKI they run with. clientURLs and leafURLs list every
// member, comma-separated: admin connections fail over between them and
// each leaf's uplink lists them all, as `alpha site --hub` does. Such a
// hub has no Restart: restart its members.
func Attach(t testing.TB, dir string, op *accounts.Operator, pki tlsfiles.Files, clientURLs, leafURLs string) *Hub {
	return &Hub{T: t, Dir: dir, Op: op, PKI: pki, clientURLs: clientURLs, leafURLs: leafURLs}
}

// ClientURL is where the hub's clients connect.
func (p *Hub) ClientURL() string {
	if p.clientURLs != "" {
		return p.clientURLs
	}
	if p.Proc != nil {
		return p.Proc.clientURL
	}
	return p.Hub.ClientURL()
}

// LeafURL is where site leaves connect.
func (p *Hub) LeafURL() string {
	if p.leafURLs != "" {
		return p.leafURLs
	}
	if p.Proc != nil {
		return p.Proc.leafURL
	}
	return p.Hub.LeafURL()
}

// TLS is the client option that verifies the test CA.
func (p *Hub) TLS() nats.Option {
	o, err := p.PKI.NATS()
	check.NoError(p.T, err)
	return o
}

// Admin is a tenant administrator's connection and JetStream at the hub,
// over TLS; closed when the test ends.
func (p *Hub) Admin(tenant string) (*nats.Conn, jetstream.JetStream) {
	p.T.Helper()
	nc, js, err := p.Op.AdminJetStream(p.ClientURL(), tenant, p.TLS(), nats.MaxReconnects(-1))
	check.NoError(p.T, err)
	p.T.Cleanup(nc.Close)
	return nc, js
}

// AddSite issues a site's bundle and registers the site with quota (nil:
// the defaults), as `alpha site add` does; it returns the bundle directory.
func (p *Hub) AddSite(site, tenant string, quota *streams.SiteQuota, nodes ...string) string {
	p.T.Helper()
	out := filepath.Join(p.Dir, "bundle-"+site+"-"+tenant)
	_, err := p.Op.AddSite(site, tenant, nodes, out)
	check.NoError(p.T, err)
	p.pushSites(tenant, site)
	check.NoError(p.T, accounts.RegisterSiteQuota(context.Background(), p.admin(tenant), site, quota))
	return out
}

// pushSites sends the sites' accounts to the running hub, as `alpha site
// add` does.
func (p *Hub) pushSites(tenant string, sites ...string) {
	p.T.Helper()
	nc, err := p.Op.SysConn(p.ClientURL(), p.TLS())
	check.NoError(p.T, err)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, site := range sites {
		check.NoError(p.T, p.Op.PushSite(ctx, nc, tenant, site))
	}
}

// AddSites is AddSite for many sites with the same nodes, registered at the
// hub in one go (accounts.RegisterSites); it returns the bundle
// directories in the order of sites.
func (p *Hub) AddSites(sites []string, tenant string, quota *streams.SiteQuota, nodes ...string) []string {
	p.T.Helper()
	var bundles []string
	for _, site := range sites {
		out := filepath.Join(p.Dir, "bundle-"+site+"-"+tenant)
		_, err := p.Op.AddSite(site, tenant, nodes, out)
		check.NoError(p.T, err)
		bundles = append(bundles, out)
	}
	p.pushSites(tenant, sites...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	check.NoError(p.T, accounts.RegisterSites(ctx, p.admin(tenant), sites, quota))
	return bundles
}

// admin is one administrator JetStream per tenant, shared by AddSite calls:
// a connection per site would stay open until the test ends and count in
// the hub's memory.
func (p *Hub) admin(tenant string) jetstream.JetStream {
	p.mu.Lock()
	js, ok := p.admins[tenant]
	p.mu.Unlock()
	if ok {
		return js
	}
	_, js = p.Admin(tenant)
	p.mu.Lock()
	if p.admins == nil {
		p.admins = map[string]jetstream.JetStream{}
	}
	p.admins[tenant] = js
	p.mu.Unlock()
	return js
}

// LeafOptions place a site leaf; zero values pick a temp store, a port of
// the leaf's own choosing on loopback and the hub's leafnode URL.
type LeafOptions struct {
	HubURL, Store, Listen string
	Log                   io.Writer // debug level; nil: quiet
	// ServeTLS makes the agents' listener serve TLS with the test
	// certificate (agents then connect with TLS); otherwise it stays plain
	// on loopback, as in the README's walkthrough.
	ServeTLS bool
	// Compression of the uplink (leaf.Config.Compression; "" the default).
	Compression string
	// NoHub starts an air-gapped leaf: no uplink, stores that signed
	// bundles fill (alpha bundle import).
	NoHub bool
	// StickDirs are where the leaf's bundle service takes sticks from
	// (default: the system's temp directory, where tests keep them).
	StickDirs []string
	// PingInterval is the leaf's uplink liveness check
	// (leaf.Config.PingInterval; 0: its default).
	PingInterval time.Duration
}

// StartLeaf runs a genuine site leaf from its bundle: its uplink
// authenticates with the bundle and verifies the hub with the CA. It stops when the test ends;
// the returned stop function may stop it earlier (idempotent).
func (p *Hub) StartLeaf(bundle string, o LeafOptions) (*leaf.Leaf, func()) {
	p.T.Helper()
	setup, err := accounts.Leaf(bundle)
	check.NoError(p.T, err)
	cfg, err := accounts.LoadSite(bundle)
	check.NoError(p.T, err)
	var hubs []string
	if !o.NoHub {
		if o.HubURL == "" {
			o.HubURL = p.LeafURL()
		}
		hubs = []string{o.HubURL}
	}
	if o.Store == "" {
		o.Store = p.T.TempDir()
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:-1"
	}
	log := stack.Log()
	if o.Log != nil {
		log = slog.New(slog.NewTextHandler(o.Log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	leafTLS := tlsfiles.Files{CA: p.PKI.CA}
	if o.ServeTLS {
		leafTLS = p.PKI
	}
	var l *leaf.Leaf
	check.Rebind(p.T, func() (err error) { // a restart binds the port it had
		l, err = leaf.Start(context.Background(), leaf.Config{
			Site: cfg.Site, HubURLs: hubs, StoreDir: o.Store, Listen: o.Listen, Log: log,
			Options: func(so *server.Options) error {
				if err := setup.Options(so); err != nil {
					return err
				}
				return leafTLS.Leaf(so)
			},
			ClientOptions: setup.ClientOptions,
			NoRegister:    true,
			Compression:   o.Compression,
			PingInterval:  o.PingInterval,
		})
		return err
	})
	// The leaf's bundle service, as `alpha site` and `alpha leaf` run it.
	ctx, cancel := context.WithCancel(context.Background())
	trust, err := accounts.BundleTrust(bundle)
	check.NoError(p.T, err)
	seed, err := accounts.LeafSeed(bundle)
	check.NoError(p.T, err)
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(l.Server)}, setup.ClientOptions...)...)
	check.NoError(p.T, err)
	ljs, err := jetstream.NewWithDomain(nc, cfg.Site)
	check.NoError(p.T, err)
	if len(o.StickDirs) == 0 {
		o.StickDirs = []string{os.TempDir()}
	}
	check.NoError(p.T, albundle.Serve(ctx, ljs, albundle.ServeConfig{Site: cfg.Site, Tenant: cfg.Tenant, Trusted: trust, Seed: seed,
		Dirs: o.StickDirs, Log: log}))
	p.mu.Lock()
	if p.leafs == nil {
		p.leafs = map[*leaf.Leaf]leafSelf{}
	}
	p.leafs[l] = leafSelf{site: cfg.Site, opts: setup.ClientOptions}
	p.mu.Unlock()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			nc.Close()
			l.Shutdown()
		}
	}
	p.T.Cleanup(stop)
	return l, stop
}

// AgentConn connects as node's agent of the bundle's site to leaf l, over
// its client listener (agents may not connect in-process), with the
// agent's own key and permissions. Closed when the test ends.
func (p *Hub) AgentConn(l *leaf.Leaf, bundle, node string, extra ...nats.Option) *nats.Conn {
	p.T.Helper()
	cfg, err := accounts.LoadSite(bundle)
	check.NoError(p.T, err)
	opts, err := accounts.AgentOptions(cfg.Site, node, filepath.Join(bundle, accounts.AgentSeedFile(node)))
	check.NoError(p.T, err)
	nc, err := nats.Connect(l.ClientURL(), append(append(opts, nats.MaxReconnects(-1)), extra...)...)
	check.NoError(p.T, err)
	p.T.Cleanup(nc.Close)
	return nc
}

// LeafJetStream is a client of the leaf's own domain with the leaf's own
// (unrestricted) identity: what the site's box itself can do locally.
func (p *Hub) LeafJetStream(l *leaf.Leaf) jetstream.JetStream {
	p.T.Helper()
	p.mu.Lock()
	self, ok := p.leafs[l]
	p.mu.Unlock()
	if !ok {
		p.T.Fatal("prodtest: LeafJetStream of a leaf StartLeaf did not start")
	}
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(l.Server)}, self.opts...)...)
	check.NoError(p.T, err)
	p.T.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, self.site)
	check.NoError(p.T, err)
	return js
}

// Acked fails the test on a publish that was refused or not acked within
// 30 s.
func Acked(t testing.TB, acks []jetstream.PubAckFuture) {
	t.Helper()
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatalf("publish to %s: %v", f.Msg().Subject, err)
		case <-time.After(30 * time.Second):
			t.Fatalf("publish to %s: no ack within 30 s", f.Msg().Subject)
		}
	}
}

// FillStream creates stream name on subject in js and stores n messages
// there, message i being data(i).
func FillStream(t testing.TB, js jetstream.JetStream, name, subject string, n int, data func(i int) []byte) {
	t.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: []string{subject}})
	check.NoError(t, err)
	var acks []jetstream.PubAckFuture
	for i := range n {
		a, err := js.PublishAsync(subject, data(i))
		check.NoError(t, err)
		acks = append(acks, a)
	}
	Acked(t, acks)
}
