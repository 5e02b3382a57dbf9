package prodtest

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// AgentOptions place a node's agent; zero values pick temp directories.
type AgentOptions struct {
	Root, State string
	// Tune changes the agent's config last (PodmanURI, Resync, ...).
	Tune func(*agent.Config)
}

// StartAgent runs a node's agent wired as `alpha agent` wires it: its own
// nkey from the site's bundle, and only blueprints signed by a publisher
// the bundle trusts. Sandbox is on (files and containers only). It stops
// when the test ends; the returned stop function may stop it earlier
// (idempotent).
func (p *Hub) StartAgent(bundle, node, natsURL string, o AgentOptions) (*agent.Agent, func()) {
	p.T.Helper()
	site, err := accounts.LoadSite(bundle)
	check.NoError(p.T, err)
	if o.Root == "" {
		o.Root = p.T.TempDir()
	}
	if o.State == "" {
		o.State = p.T.TempDir()
	}
	opts, err := accounts.AgentOptions(site.Site, node, filepath.Join(bundle, accounts.AgentSeedFile(node)))
	check.NoError(p.T, err)
	keys, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.TrustedKeysFile))
	check.NoError(p.T, err)
	v, err := sign.NewVerifier(keys, o.State)
	check.NoError(p.T, err)
	cfg := agent.Config{Site: site.Site, Node: node, NATSURL: natsURL, Root: o.Root, StateDir: o.State, Log: stack.Log(),
		Resync: 5 * time.Second, NATSOptions: opts, Verify: v.Verify, Sandbox: true}
	if o.Tune != nil {
		o.Tune(&cfg)
	}
	a, err := agent.New(cfg)
	check.NoError(p.T, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	p.T.Cleanup(stop)
	return a, stop
}

// PutSigned signs a blueprint for a node key with the tenant's publisher
// key, as `alpha blueprint sign` does, and stores it at the hub as the
// tenant's administrator; it returns the KV revision.
func (p *Hub) PutSigned(tenant, key string, blueprint []byte) uint64 {
	p.T.Helper()
	seed, err := os.ReadFile(p.Op.PublisherSeed(tenant))
	check.NoError(p.T, err)
	env, err := sign.Sign(seed, key, 0, blueprint)
	check.NoError(p.T, err)
	_, js := p.Admin(tenant)
	kv, err := js.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(p.T, err)
	rev, err := kv.Put(context.Background(), key, env)
	check.NoError(p.T, err)
	return rev
}
