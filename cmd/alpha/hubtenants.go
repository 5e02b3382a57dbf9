package main

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
)

// hubTenant is one account the hub's own services (cloud reconciler,
// metrics exporter) act in, with its connection.
type hubTenant struct {
	name string // empty without operator mode
	nc   *nats.Conn
}

// tenantConns connects the hub's services to every tenant's account under
// operator mode (each tenant's blueprints, cloud state and telemetry live
// in its own account), or once without it. The caller closes them.
func tenantConns(h *hub.Hub, op *accounts.Operator) ([]hubTenant, error) {
	if op == nil {
		nc, err := h.Connect()
		if err != nil {
			return nil, err
		}
		return []hubTenant{{nc: nc}}, nil
	}
	names, err := op.Tenants()
	if err != nil {
		return nil, err
	}
	var out []hubTenant
	for _, t := range names {
		nc, err := h.Connect(nats.UserCredentials(op.AdminCreds(t)))
		if err != nil {
			for _, c := range out {
				c.nc.Close()
			}
			return nil, fmt.Errorf("tenant %s: %w", t, err)
		}
		out = append(out, hubTenant{name: t, nc: nc})
	}
	return out, nil
}
