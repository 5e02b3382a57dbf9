package scale_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
	"github.com/alpha-edge/alpha/streams"
)

// TestClusterRebalanceAfterRestart restarts the member of a three-member
// hub cluster (`alpha hub` processes, production mode) that holds the most
// of 18 sites: its sites move to the survivors, and without the
// rebalancer they stay there, the restarted member holding none. With it
// (checking every 2 s here) the survivors drop links until the restarted
// member holds at least a third of its share, every site stays linked,
// and a blueprint put afterwards reaches every site.
//
// 18 sites, not fewer: a survivor moves links only once it holds more
// than its share (6) by a margin of 2, and with 18 the busier survivor
// always holds at least 9.
func TestClusterRebalanceAfterRestart(t *testing.T) {
	const sites, members = 18, 3
	dir := t.TempDir()
	prod := chaos.NewProd(t, dir)
	check.NoError(t, prod.Op.SetTenant(chaos.Tenant, accounts.TenantLimits{Storage: -1, Memory: 64 << 20, Streams: -1, Consumers: -1}))
	hubs := chaos.StartHubClusterProd(t, dir, members, prod, "--rebalance-every", "2s")
	hub, ports := attachCluster(t, dir, prod, hubs)
	f := scale.Start(t, scale.Options{Hub: hub, Sites: sites, Telemetry: -1})
	// The tenant's admin listens where the members' count requests would
	// be if they travelled in its account: it must hear none (it could
	// answer them first with forged counts and make a member drop every
	// tenant's links), and nobody there answers its own.
	admin, _ := hub.Admin(chaos.Tenant)
	if _, err := admin.Request("alpha.hub.leafcount", nil, time.Second); err == nil {
		t.Fatal("a member answered the tenant admin's link count request")
	}
	heard, err := admin.SubscribeSync("alpha.hub.leafcount")
	check.NoError(t, err)
	per := linksPerMember(f, ports, members)
	t.Logf("links per member after start: %v", per)

	victim := 0
	for i, n := range per {
		if n > per[victim] {
			victim = i
		}
	}
	hubs[victim].Restart()
	hubs[victim].WaitReady(90 * time.Second)
	back := time.Now()

	// A third of the share, rounded up: 2 of 6.
	want := (sites/members + 2) / 3
	check.For(t, 3*time.Minute, 500*time.Millisecond, func() error {
		per = linksPerMember(f, ports, members)
		linked := 0
		for _, n := range per {
			linked += n
		}
		if linked != sites {
			return fmt.Errorf("%d of %d sites linked (%v)", linked, sites, per)
		}
		if per[victim] < want {
			return fmt.Errorf("%s holds %d sites, want at least %d (%v)", hubs[victim].Name, per[victim], want, per)
		}
		return nil
	})
	t.Logf("links per member %v after %s rejoined: %v", time.Since(back).Round(time.Second), hubs[victim].Name, per)
	moved := 0
	for _, h := range hubs {
		moved += h.CountLog("rebalance: moved site links")
	}
	if moved == 0 {
		t.Fatalf("no member logged a rebalance, yet %s holds %d sites", hubs[victim].Name, per[victim])
	}
	if n, _, _ := heard.Pending(); n != 0 {
		t.Fatalf("the tenant admin heard %d of the members' link count requests", n)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	payload := "after the rebalance " + time.Now().Format(time.RFC3339Nano)
	if _, err := f.WaitApplied(ctx, f.PutAll(ctx, payload)); err != nil {
		t.Fatal(err)
	}
	// The content, read at each site through its node's own agent
	// identity, not only the revision the node saw.
	for _, s := range f.Sites {
		n := s.Nodes[0]
		js, err := jetstream.NewWithDomain(hub.AgentConn(s.Leaf, s.Bundle, n.ID), s.ID)
		check.NoError(t, err)
		kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
		check.NoError(t, err)
		e, err := kv.Get(ctx, n.Key())
		check.NoError(t, err)
		if !bytes.Equal(e.Value(), []byte(payload)) {
			t.Fatalf("site %s has %q, want %q", s.ID, e.Value(), payload)
		}
	}
}
