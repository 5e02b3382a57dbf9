package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/rollout"
)

// startRollouts runs a rollout controller per tenant beside the hub. stop
// ends them and waits. In a cluster every member runs one: their puts and
// state updates are revision-checked, so they never undo each other.
func startRollouts(ctx context.Context, h *hub.Hub, op *accounts.Operator, log *slog.Logger) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	tenants, err := tenantConns(h, op)
	if err != nil {
		return stop, err
	}
	// A site linked to another member is not in this member's leafz: only
	// a standalone hub knows every link.
	var reachable func(string) bool
	if clusterAddr(h) == "" {
		reachable = func(site string) bool { return leafLinked(h.Server, site) }
	}
	for _, t := range tenants {
		js, err := jetstream.New(t.nc)
		if err != nil {
			t.nc.Close()
			continue
		}
		tlog := log
		if t.name != "" {
			tlog = log.With("tenant", t.name)
		}
		c := rollout.New(rollout.Config{JS: js, Log: tlog, Reachable: reachable})
		wg.Go(func() {
			defer t.nc.Close()
			if err := c.Run(ctx); err != nil && ctx.Err() == nil {
				tlog.Error("rollout controller stopped", "err", err)
			}
		})
	}
	return stop, nil
}

// leafLinked says the site's leaf (server name leaf-<site>) holds a
// leafnode connection to this server.
func leafLinked(s *server.Server, site string) bool {
	lz, err := s.Leafz(nil)
	if err != nil {
		return true // unknown: let status freshness decide
	}
	for _, l := range lz.Leafs {
		if l.Name == "leaf-"+site {
			return true
		}
	}
	return false
}
