package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

func init() {
	register("accounts", "operator mode: init the operator and tenants, add a tenant, show keys", runAccounts)
}

func runAccounts(ctx context.Context, args []string) error {
	usage := errors.New("usage: alpha accounts init|tenant-add|refresh|show [flags]")
	if len(args) == 0 {
		return usage
	}
	switch args[0] {
	case "init":
		return runAccountsInit(args[1:])
	case "tenant-add":
		return runTenantAdd(ctx, args[1:])
	case "refresh":
		return runAccountsRefresh(ctx, args[1:])
	case "show":
		return runAccountsShow(args[1:])
	}
	return usage
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// runAccountsRefresh brings the directory's accounts to this build's shape
// (tenants' exports, site accounts' imports and caps) and pushes the ones
// that changed: the step after an upgrade.
func runAccountsRefresh(ctx context.Context, args []string) error {
	fs := newFlags("accounts refresh")
	af := addAdminFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	op, err := accounts.Load(*af.dir)
	if err != nil {
		return err
	}
	changed, err := op.Refresh()
	if err != nil {
		return err
	}
	fmt.Printf("%d account(s) signed again in %s: %s\n", len(changed), op.Dir, strings.Join(changed, ", "))
	if *af.hub == "" || len(changed) == 0 {
		if len(changed) > 0 {
			fmt.Println("no --hub: the hub learns them at its next start")
		}
		return nil
	}
	tlsOpts, err := af.tls()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	nc, err := op.SysConn(*af.hub, tlsOpts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	for _, name := range changed {
		j, err := op.AccountJWT(name)
		if err != nil {
			return err
		}
		if err := accounts.PushJWT(ctx, nc, j); err != nil {
			return fmt.Errorf("pushing %s: %w", name, err)
		}
	}
	fmt.Printf("%d account(s) pushed to %s\n", len(changed), *af.hub)
	return nil
}

func runAccountsInit(args []string) error {
	fs := newFlags("accounts init")
	dir := fs.String("dir", "/etc/alpha/operator", "operator directory to create (keep it off the sites)")
	name := fs.String("name", "alpha", "operator name")
	tenants := fs.String("tenants", "default", "tenants, comma-separated: one account each")
	lim := addTenantLimitFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	op, err := accounts.InitLimits(*dir, *name, splitList(*tenants), *lim)
	if err != nil {
		return err
	}
	return showOperator(op)
}

func runAccountsShow(args []string) error {
	fs := newFlags("accounts show")
	dir := fs.String("dir", "/etc/alpha/operator", "operator directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	op, err := accounts.Load(*dir)
	if err != nil {
		return err
	}
	return showOperator(op)
}

func showOperator(op *accounts.Operator) error {
	tenants, err := op.Tenants()
	if err != nil {
		return err
	}
	fmt.Printf("operator directory %s\n  system user: %s\n", op.Dir, op.SysCreds())
	if _, err := os.Stat(op.HubOutputsSeed()); err == nil {
		hk, err := op.HubOutputsKey()
		if err != nil {
			return err
		}
		fmt.Printf("  hub outputs: %s (seed %s; the hub signs cloud outputs with it)\n", hk, op.HubOutputsSeed())
	}
	for _, t := range tenants {
		pk, err := op.PublisherKey(t)
		if err != nil {
			return err
		}
		fmt.Printf("  tenant %s\n    admin:     %s\n    publisher: %s (seed %s)\n", t, op.AdminCreds(t), pk, op.PublisherSeed(t))
	}
	return nil
}

// runTenantAdd adds a tenant, pushes its account to a running hub and
// creates its buckets: no restart. With limit flags it also sets an
// existing tenant's limits.
func runTenantAdd(ctx context.Context, args []string) error {
	fs := newFlags("accounts tenant-add")
	dir := fs.String("dir", "/etc/alpha/operator", "operator directory")
	hubURL := fs.String("hub", "", "hub client URL, tls://HOST:4222 (empty: only write the files; the hub loads them at start)")
	ca := fs.String("tls-ca", "", "CA of the hub's certificate")
	lim := addTenantLimitFlags(fs)
	t, err := parseOne(fs, args, "TENANT")
	if err != nil {
		return fmt.Errorf("%w (usage: alpha accounts tenant-add TENANT --dir D --hub URL --tls-ca CA)", err)
	}
	op, err := accounts.Load(*dir)
	if err != nil {
		return err
	}
	if anySet(fs, "max-") {
		err = op.SetTenant(t, *lim)
	} else {
		err = op.AddTenant(t)
	}
	if err != nil {
		return err
	}
	if *hubURL != "" {
		tlsOpt, err := tlsfiles.Files{CA: *ca}.NATS()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := op.Push(ctx, *hubURL, t, tlsOpt); err != nil {
			return err
		}
		nc, js, err := op.AdminJetStream(*hubURL, t, tlsOpt)
		if err != nil {
			return err
		}
		defer nc.Close()
		if err := hub.Bootstrap(ctx, js, 1); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "tenant %s added\n", t)
	return showOperator(op)
}
