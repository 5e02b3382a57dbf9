package chaos_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/internal/stack"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// prodEnv is the in-process production setup of one site, wired as `alpha
// hub`, `alpha site add`, `alpha leaf` and `alpha agent` wire it (see
// cmd/alpha/secure.go): a hub in operator mode with TLS on both listeners,
// the site's bundle issued and registered by the tenant's administrator, a
// leaf that authenticates its uplink with the bundle and verifies the hub
// with the CA, agents with their own nkeys that apply only blueprints signed
// by the tenant's publisher.
type prodEnv struct {
	t      testing.TB
	site   string
	op     *accounts.Operator
	pki    tlsfiles.Files
	hub    *hub.Hub
	bundle string
	bp     jetstream.KeyValue // the hub's blueprints, as the tenant admin
}

func newProdEnv(t testing.TB, site string, nodes ...string) *prodEnv {
	t.Helper()
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "chaos", []string{chaos.Tenant})
	check.NoError(t, err)
	pki, err := tlsfiles.WriteTestPKI(dir)
	check.NoError(t, err)
	store := filepath.Join(dir, "hub")
	h, err := hub.Start(context.Background(), hub.Config{
		StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: stack.Log(),
		Options: func(o *server.Options) error {
			if err := op.HubOptions(filepath.Join(store, "resolver"))(o); err != nil {
				return err
			}
			return pki.Hub(o)
		},
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds(chaos.Tenant))},
	})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	e := &prodEnv{t: t, site: site, op: op, pki: pki, hub: h, bundle: filepath.Join(dir, "bundle")}
	_, err = op.AddSite(site, chaos.Tenant, nodes, e.bundle)
	check.NoError(t, err)
	ca, err := tlsfiles.Files{CA: pki.CA}.NATS()
	check.NoError(t, err)
	nc, js, err := op.AdminJetStream(h.ClientURL(), chaos.Tenant, ca)
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	check.NoError(t, accounts.RegisterSite(context.Background(), js, site))
	e.bp, err = js.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(t, err)
	return e
}

// leafAt starts the site's leaf on listen (HOST:-1 for a port of its own
// choosing) with its uplink to hubURL; the stop function is idempotent.
func (e *prodEnv) leafAt(hubURL, store, listen string) (*leaf.Leaf, func()) {
	e.t.Helper()
	setup, err := accounts.Leaf(e.bundle)
	check.NoError(e.t, err)
	// Only the CA: the agents' listener stays plain on loopback.
	uplinkTLS := tlsfiles.Files{CA: e.pki.CA}
	var l *leaf.Leaf
	check.Rebind(e.t, func() (err error) { // a restart binds the port it had
		l, err = leaf.Start(context.Background(), leaf.Config{
			Site: e.site, HubURLs: []string{hubURL}, StoreDir: store, Listen: listen, Log: stack.Log(),
			Options: func(o *server.Options) error {
				if err := setup.Options(o); err != nil {
					return err
				}
				return uplinkTLS.Leaf(o)
			},
			ClientOptions: setup.ClientOptions,
			NoRegister:    true,
		})
		return err
	})
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			l.Shutdown()
		}
	}
	e.t.Cleanup(stop)
	return l, stop
}

// agent runs a node's agent with its key from the bundle and the trusted
// publisher keys until the returned stop function or cleanup.
func (e *prodEnv) agent(node, natsURL, root, state string) func() {
	e.t.Helper()
	opts, err := accounts.AgentOptions(e.site, node, filepath.Join(e.bundle, accounts.AgentSeedFile(node)))
	check.NoError(e.t, err)
	keys, err := accounts.ReadTrustedKeys(filepath.Join(e.bundle, accounts.TrustedKeysFile))
	check.NoError(e.t, err)
	v, err := sign.NewVerifier(keys, state)
	check.NoError(e.t, err)
	a, err := agent.New(agent.Config{Site: e.site, Node: node, NATSURL: natsURL, Root: root, StateDir: state, Log: stack.Log(),
		Resync: 5 * time.Second, NATSOptions: opts, Verify: v.Verify, Sandbox: true})
	check.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	e.t.Cleanup(stop)
	return stop
}

// put signs a blueprint for a node key with the tenant's publisher key (a
// sequence that grows with time) and stores it at the hub.
func (e *prodEnv) put(key, blueprint string) {
	e.t.Helper()
	seed, err := os.ReadFile(e.op.PublisherSeed(chaos.Tenant))
	check.NoError(e.t, err)
	env, err := sign.Sign(seed, key, 0, []byte(blueprint))
	check.NoError(e.t, err)
	_, err = e.bp.Put(context.Background(), key, env)
	check.NoError(e.t, err)
}

// siteBlueprints is the site's mirrored blueprints bucket as a node's agent
// reads it at the leaf (its own key only).
func (e *prodEnv) siteBlueprints(l *leaf.Leaf, node string) jetstream.KeyValue {
	e.t.Helper()
	opts, err := accounts.AgentOptions(e.site, node, filepath.Join(e.bundle, accounts.AgentSeedFile(node)))
	check.NoError(e.t, err)
	nc, err := nats.Connect(l.ClientURL(), opts...)
	check.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, e.site)
	check.NoError(e.t, err)
	var kv jetstream.KeyValue
	check.For(e.t, 10*time.Second, 20*time.Millisecond, func() error {
		kv, err = js.KeyValue(context.Background(), streams.BlueprintsBucket)
		return err
	})
	return kv
}
