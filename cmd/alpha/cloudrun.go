package main

import (
	"context"
	"flag"
	"log/slog"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

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

// start runs the cloud reconciler beside the hub. A missing Terraform is
// reported by the reconciler once and marks cloud configurations failed; the
// rest of the hub runs regardless.
func (f cloudFlags) start(ctx context.Context, h *hub.Hub, store string, log *slog.Logger) error {
	if *f.off {
		return nil
	}
	nc, err := h.Connect()
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	r, err := cloud.New(cloud.Config{JS: js, Terraform: *f.terraform, ProviderMirror: *f.mirror,
		WorkDir: filepath.Join(store, "..", filepath.Base(store)+"-cloud"), Replicas: h.Replicas(), Log: log})
	if err != nil {
		return err
	}
	go func() {
		defer nc.Close()
		if err := r.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("cloud reconciler stopped; the rest of the hub keeps running", "err", err)
		}
	}()
	return nil
}
