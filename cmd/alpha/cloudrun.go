package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/cloud"
)

type cloudFlags struct {
	terraform, mirror, allowExec, user, memory, envDir *string
	cpu, timeout                                       *time.Duration
	off                                                *bool
}

func addCloudFlags(fs *flag.FlagSet) cloudFlags {
	return cloudFlags{
		terraform: fs.String("terraform", "terraform", "Terraform binary (path or name on PATH) for spec.cloud"),
		mirror:    fs.String("provider-mirror", "", "directory of Terraform providers; when set, providers come only from it (air-gapped hubs)"),
		off:       fs.Bool("no-cloud", false, "do not provision spec.cloud at this hub"),
		allowExec: fs.String("cloud-allow-exec", "", "tenants (comma-separated, * for all) whose spec.cloud may use provisioners (local-exec, remote-exec) and the external data source; refused for everyone else"),
		user:      fs.String("cloud-user", "alpha-tf", "system user Terraform runs as when the hub runs as root; USER-TENANT is used for a tenant if it exists, else USER, else nobody"),
		memory:    fs.String("cloud-memory", "4Gi", "address space limit of each Terraform and provider process"),
		cpu:       fs.Duration("cloud-cpu", 30*time.Minute, "CPU time limit of each Terraform and provider process"),
		timeout:   fs.Duration("cloud-timeout", time.Hour, "time limit of one Terraform run (init to apply) of one configuration"),
		envDir:    fs.String("cloud-env-dir", "", "directory of TENANT.env files (KEY=VALUE lines, e.g. cloud credentials) given to that tenant's Terraform; nothing else of the hub's environment reaches it"),
	}
}

// start runs the cloud reconciler beside the hub, one per tenant under
// operator mode (each in its own account, with its own working directory).
// A missing Terraform is reported by the reconciler once and marks cloud
// configurations failed; the rest of the hub runs regardless. stop ends the
// reconcilers and waits for them (a Terraform run in progress, a status
// being written), so the hub is shut down after them, not under them.
func (f cloudFlags) start(ctx context.Context, h *hub.Hub, store string, op *accounts.Operator, log *slog.Logger) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() {
		cancel()
		wg.Wait()
	}
	if *f.off {
		return stop, nil
	}
	// Terraform runs in (and is started from) directories under the store;
	// a relative --store would resolve against the wrong directory there.
	store, err = filepath.Abs(store)
	if err != nil {
		return stop, fmt.Errorf("--store: %w", err)
	}
	tenants, err := tenantConns(h, op)
	if err != nil {
		return stop, err
	}
	seed := outputsSeed(op, log)
	for i, t := range tenants {
		js, err := jetstream.New(t.nc)
		if err != nil {
			closeAll(tenants[i:])
			return stop, err
		}
		work := filepath.Join(store, "..", filepath.Base(store)+"-cloud")
		tlog := log
		if t.name != "" {
			work = filepath.Join(work, t.name)
			tlog = log.With("tenant", t.name)
		}
		cfg, err := f.config(t.name, op, tlog)
		if err != nil {
			// One tenant's setup must not take the hub or the others down.
			tlog.Error("cloud reconciler not started for this tenant", "err", err)
			t.nc.Close()
			continue
		}
		cfg.JS, cfg.WorkDir, cfg.Replicas, cfg.OutputsSeed, cfg.Log = js, work, h.Replicas(), seed, tlog
		r, err := cloud.New(cfg)
		if err != nil {
			closeAll(tenants[i:])
			return stop, err
		}
		wg.Go(func() {
			defer t.nc.Close()
			if err := r.Run(ctx); err != nil && ctx.Err() == nil {
				tlog.Error("cloud reconciler stopped; the rest of the hub keeps running", "err", err)
			}
		})
	}
	return stop, nil
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

// config is one tenant's reconciler configuration from the flags: in
// operator mode only blueprints signed by the tenant's publisher key are
// provisioned, and Terraform runs confined when the hub runs as root.
func (f cloudFlags) config(tenant string, op *accounts.Operator, log *slog.Logger) (cloud.Config, error) {
	cfg := cloud.Config{Terraform: *f.terraform, ProviderMirror: *f.mirror, Timeout: *f.timeout}
	allowed := strings.Split(*f.allowExec, ",")
	cfg.AllowExec = slices.Contains(allowed, "*") || (tenant != "" && slices.Contains(allowed, tenant))
	if op != nil {
		key, err := op.PublisherKey(tenant)
		if err != nil {
			return cfg, fmt.Errorf("tenant %s: publisher key (%s): %w; only signed blueprints are provisioned in operator mode", tenant, op.PublisherSeed(tenant), err)
		}
		if cfg.Decode, err = cloud.SignedOnly([]string{key}); err != nil {
			return cfg, err
		}
	}
	env, err := f.env(tenant)
	if err != nil {
		return cfg, err
	}
	cfg.Env = env
	switch {
	case op == nil:
		// Dev and --insecure: one trusted user trying things out; confining
		// would change the permissions of the directories above the store.
		log.Warn("not in operator mode: Terraform runs as the hub's own user (scrubbed environment, time limit only)")
		return cfg, nil
	case os.Geteuid() != 0:
		log.Warn("hub is not root: Terraform runs as the hub's own user (scrubbed environment, time limit only)")
		return cfg, nil
	}
	mem, err := blueprint.ParseBytes(*f.memory)
	if err != nil || mem <= 0 {
		return cfg, fmt.Errorf("--cloud-memory %q: want a size like 4Gi (%v)", *f.memory, err)
	}
	uid, gid, name, err := f.confinedUser(tenant)
	if err != nil {
		return cfg, err
	}
	log.Info("terraform runs confined", "user", name, "uid", uid, "memory", *f.memory, "cpu", *f.cpu, "timeout", *f.timeout, "exec allowed", cfg.AllowExec)
	cfg.Confine = &cloud.Confinement{UID: uid, GID: gid, Memory: uint64(mem), CPU: *f.cpu}
	return cfg, nil
}

// confinedUser resolves the user a tenant's Terraform runs as: USER-TENANT,
// USER, then nobody. A shared user lets one tenant's runs read another's
// working directories, hence the per-tenant name first.
func (f cloudFlags) confinedUser(tenant string) (uint32, uint32, string, error) {
	var names []string
	if tenant != "" {
		names = append(names, *f.user+"-"+tenant)
	}
	names = append(names, *f.user, "nobody")
	for _, n := range names {
		u, err := user.Lookup(n)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return 0, 0, "", fmt.Errorf("user %s: %w", n, err)
		}
		if uid == 0 {
			return 0, 0, "", fmt.Errorf("--cloud-user %s is root: Terraform must run unprivileged", n)
		}
		return uint32(uid), uint32(gid), n, nil
	}
	return 0, 0, "", fmt.Errorf("none of the users %s exists: create one for Terraform (useradd --system %s)", strings.Join(names, ", "), *f.user)
}

// env reads the tenant's KEY=VALUE file from --cloud-env-dir (default.env
// without operator mode). A missing file is an empty environment.
func (f cloudFlags) env(tenant string) (map[string]string, error) {
	if *f.envDir == "" {
		return nil, nil
	}
	if tenant == "" {
		tenant = "default"
	}
	path := filepath.Join(*f.envDir, tenant+".env")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s:%d: %q is not KEY=VALUE", path, n, line)
		}
		env[k] = v
	}
	return env, sc.Err()
}

func closeAll(ts []hubTenant) {
	for _, t := range ts {
		t.nc.Close()
	}
}
