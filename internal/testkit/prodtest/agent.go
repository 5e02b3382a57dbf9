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

// StartAgent runs a node's agent as `alpha agent` does in production: its
// nkey from the site bundle, applying only blueprints signed by the
// tenant's publisher, in a sandbox (files under root only). It stops when
// the test ends or on the returned function (idempotent).
func (p *Hub) StartAgent(bundle, node, natsURL, root string) func() {
	p.T.Helper()
	cfg, err := accounts.LoadSite(bundle)
	check.NoError(p.T, err)
	opts, err := accounts.AgentOptions(cfg.Site, node, filepath.Join(bundle, accounts.AgentSeedFile(node)))
	check.NoError(p.T, err)
	keys, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.TrustedKeysFile))
	check.NoError(p.T, err)
	state := p.T.TempDir()
	v, err := sign.NewVerifier(keys, state)
	check.NoError(p.T, err)
	a, err := agent.New(agent.Config{Site: cfg.Site, Node: node, NATSURL: natsURL, Root: root, StateDir: state, Log: stack.Log(),
		Resync: 5 * time.Second, NATSOptions: opts, Verify: v.Verify, Sandbox: true})
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
	return stop
}

// Put signs a blueprint for a node with the tenant's publisher key and
// stores it in the hub's blueprints bucket, as `alpha blueprint put` does;
// it returns the revision.
func (p *Hub) Put(tenant, site, node, blueprint string) uint64 {
	p.T.Helper()
	seed, err := os.ReadFile(p.Op.PublisherSeed(tenant))
	check.NoError(p.T, err)
	key := streams.Key(site, node)
	env, err := sign.Sign(seed, key, 0, []byte(blueprint))
	check.NoError(p.T, err)
	_, js := p.Admin(tenant)
	kv, err := js.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(p.T, err)
	rev, err := kv.Put(context.Background(), key, env)
	check.NoError(p.T, err)
	return rev
}
