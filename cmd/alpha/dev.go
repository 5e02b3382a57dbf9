package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
)

func init() {
	register("dev", "hub, site dev and agent dev-1 in one process, for trying Alpha", runDev)
}

func runDev(ctx context.Context, args []string) error {
	fs := newFlags("dev")
	dir := fs.String("dir", ".alpha-dev", "state directory")
	listen := fs.String("listen", "127.0.0.1:4222", "hub client listener")
	cf := addCloudFlags(fs)
	mf := addMetricsFlags(fs)
	uf := addUIFlags(fs, "127.0.0.1:8464")
	podman := fs.String("podman", "unix:///run/podman/podman.sock", "podman REST API socket, for spec.containers")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	log := logger()
	h, err := hub.Start(ctx, hub.Config{StoreDir: filepath.Join(abs, "hub"), Listen: *listen, LeafListen: "127.0.0.1:-1", Log: log})
	if err != nil {
		return err
	}
	defer h.Shutdown()
	stopCloud, err := cf.start(ctx, h, filepath.Join(abs, "hub"), nil, log)
	defer stopCloud() // before the hub's shutdown
	if err != nil {
		return err
	}
	if err := mf.start(ctx, h, nil, log); err != nil {
		return err
	}
	stopUI, uiURL, err := uf.start(ctx, h, nil, tlsfiles.Files{}, log)
	defer stopUI()
	if err != nil {
		return err
	}
	dashboard := ""
	if uiURL != "" {
		dashboard = "  open " + uiURL + "   # the fleet dashboard, live\n"
	}
	root := filepath.Join(abs, "root")
	fmt.Fprintf(os.Stderr, `
Alpha dev stack is running: hub %s, site "dev" (leaf), agent "dev-1" (root %s).
In another terminal:

%s  nats kv put blueprints dev.dev-1 "$(cat examples/hello.yaml)"
  cat %s/etc/hello.conf
  nats kv get status dev.dev-1
  ./bin/alpha status

Ctrl-C stops it; state stays in %s.

`, h.ClientURL(), root, dashboard, root, abs)
	return runLeafAndAgent(ctx, leaf.Config{Site: "dev", HubURLs: []string{h.LeafURL()}, StoreDir: filepath.Join(abs, "leaf"),
		Listen: "127.0.0.1:-1", Log: log}, "dev-1", root, filepath.Join(abs, "agent"), *podman)
}
