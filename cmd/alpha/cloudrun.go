package main

import (
	"context"
	"flag"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/cloud"
)

type cloudFlags struct {
	terraform, mirror *string
	off               *bool
}

func addCloudFlags(fs *flag.FlagSet) cloudFlags {
	return cloudFlags{
		terraform: fs.String("terraform", "terraform", "Terraform binary (path or name on PATH) for spec.cloud"),
		mirror:    fs.String("provider-mirror", "", "directory of Terraform providers; when set, providers come only from it (air-gapped hubs)"),
		off:       fs.Bool("no-cloud", false, "do not provision spec.cloud at this hub"),
	}
}

// start runs the cloud reconciler beside the hub, one per tenant under
// operator mode (each in its own account, with its own working directory).
// A missing Terraform is reported by the reconciler once and marks cloud
// configurations failed; the rest of the hub runs regardless.
func (f cloudFlags) start(ctx context.Context, h *hub.Hub, store string, op *accounts.Operator, log *slog.Logger) error {
	if *f.off {
		return nil
	}
	tenants, err := tenantConns(h, op)
	if err != nil {
		return err
	}
	seed := outputsSeed(op, log)
	for i, t := range tenants {
		js, err := jetstream.New(t.nc)
		if err != nil {
			closeAll(tenants[i:])
			return err
		}
		work := filepath.Join(store, "..", filepath.Base(store)+"-cloud")
		tlog := log
		if t.name != "" {
			work = filepath.Join(work, t.name)
			tlog = log.With("tenant", t.name)
		}
		r, err := cloud.New(cloud.Config{JS: js, Terraform: *f.terraform, ProviderMirror: *f.mirror,
			WorkDir: work, Replicas: h.Replicas(), OutputsSeed: seed, Log: tlog})
		if err != nil {
			closeAll(tenants[i:])
			return err
		}
		go func() {
			defer t.nc.Close()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				tlog.Error("cloud reconciler stopped; the rest of the hub keeps running", "err", err)
			}
		}()
	}
	return nil
}

// outputsSeed reads the seed the hub signs cloud outputs with under
// operator mode. Without it the hub still runs and provisions, but
// publishes unsigned outputs, which production agents refuse: say so loudly.
func outputsSeed(op *accounts.Operator, log *slog.Logger) []byte {
	if op == nil {
		return nil
	}
	seed, err := os.ReadFile(op.HubOutputsSeed())
	if err != nil {
		log.Error("cannot sign cloud outputs: agents will refuse them until the hub has its outputs key (alpha site add makes it; install it on the hub)",
			"file", op.HubOutputsSeed(), "err", err)
		return nil
	}
	return seed
}

func closeAll(ts []hubTenant) {
	for _, t := range ts {
		t.nc.Close()
	}
}
