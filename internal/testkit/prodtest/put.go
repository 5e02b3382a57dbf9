package prodtest

import (
	"context"
	"os"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

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
