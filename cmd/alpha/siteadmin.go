package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	siteCommands["add"] = runSiteAdd
	siteCommands["revoke"] = runSiteRevoke
}

type adminFlags struct {
	dir, hub, ca *string
}

func addAdminFlags(fs interface {
	String(name, value, usage string) *string
}) adminFlags {
	return adminFlags{
		dir: fs.String("operator-dir", "/etc/alpha/operator", "operator directory (alpha accounts init)"),
		hub: fs.String("hub", "", "hub client URL, tls://HOST:4222"),
		ca:  fs.String("tls-ca", "", "CA of the hub's certificate (required unless the URL is nats:// with an --insecure hub)"),
	}
}

func (a adminFlags) tls() ([]nats.Option, error) {
	if *a.ca == "" {
		return nil, nil
	}
	o, err := tlsfiles.Files{CA: *a.ca}.NATS()
	if err != nil {
		return nil, err
	}
	return []nats.Option{o}, nil
}

// runSiteAdd issues a site's bundle for a tenant and registers the site at
// the hub: the leaf's credentials cannot do that themselves.
func runSiteAdd(ctx context.Context, args []string) error {
	fs := newFlags("site add")
	af := addAdminFlags(fs)
	tenant := fs.String("tenant", "default", "tenant whose account the site joins")
	nodes := fs.String("nodes", "", "node ids at the site, comma-separated (one agent each; required)")
	out := fs.String("out", "", "bundle directory to write (default OPERATOR-DIR/bundles/SITE-TENANT)")
	noRegister := fs.Bool("no-register", false, "only write the bundle; register later by running add again with --hub")
	labelList := fs.String("labels", "", "labels of every node of the site, key=value,... (alpha node label changes them later)")
	revokePrevious := fs.Bool("revoke-previous", false, "revoke the site's earlier leaf credentials for this tenant once the new bundle is issued: the old bundle stops working (each add issues a new bundle, so with --no-register the next add revokes this one)")
	quota := addSiteQuotaFlags(fs)
	site, err := parseOne(fs, args, "SITE")
	if err != nil {
		return fmt.Errorf("%w (usage: alpha site add SITE --tenant T --nodes N1,N2 --hub URL --tls-ca CA)", err)
	}
	labels, _, err := inventory.ParseLabels(splitList(*labelList))
	if err != nil {
		return fmt.Errorf("--labels: %w", err)
	}
	if len(labels) > 0 && *noRegister {
		return errors.New("--labels are kept at the hub: not with --no-register")
	}
	op, err := accounts.Load(*af.dir)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(op.Dir, "bundles", site+"-"+*tenant)
	}
	if !*noRegister && *af.hub == "" {
		return errors.New("--hub is required to register the site (or --no-register)")
	}
	if err := quota.Validate(); err != nil {
		return err
	}
	if _, err := op.AddSite(site, *tenant, splitList(*nodes), *out); err != nil {
		return err
	}
	fmt.Printf("site %s (tenant %s): bundle written to %s\n", site, *tenant, *out)
	revokedN := 0
	if *revokePrevious {
		if revokedN, err = op.RevokePrevious(site, *tenant); err != nil {
			return err
		}
		fmt.Printf("site %s: %d earlier leaf credential(s) revoked in %s; the site needs the new bundle\n", site, revokedN, op.Dir)
	}
	if *noRegister {
		fmt.Printf("site %s: its account reaches a hub when you run add again with --hub, or at the hub's next start from %s\n", site, op.Dir)
		return nil
	}
	tlsOpts, err := af.tls()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pushSite(ctx, op, af, tlsOpts, *tenant, site); err != nil {
		return err
	}
	if revokedN > 0 {
		fmt.Printf("site %s: the hub refuses the earlier credentials from now on\n", site)
	}
	nc, js, err := op.AdminJetStream(*af.hub, *tenant, tlsOpts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	if !anySet(fs, "quota-") {
		quota = nil // an existing site keeps the quota it has
	}
	if err := accounts.RegisterSiteQuota(ctx, js, site, quota); err != nil {
		return err
	}
	fmt.Printf("site %s registered at %s: mirror consumers and uplink sources in place\n", site, *af.hub)
	if len(labels) > 0 {
		for _, n := range splitList(*nodes) {
			if _, err := inventory.SetLabels(ctx, js, streams.Key(site, n), labels, nil); err != nil {
				return fmt.Errorf("labels of %s.%s: %w", site, n, err)
			}
		}
		fmt.Printf("site %s: nodes labelled %s\n", site, formatLabels(labels))
	}
	return nil
}

// runSiteRevoke revokes every credential issued to a site's leaf, pushes
// the accounts to the hub (which drops the leaf at once) and removes the
// site's plumbing there.
func runSiteRevoke(ctx context.Context, args []string) error {
	fs := newFlags("site revoke")
	af := addAdminFlags(fs)
	site, err := parseOne(fs, args, "SITE")
	if err != nil {
		return fmt.Errorf("%w (usage: alpha site revoke SITE --hub URL --tls-ca CA)", err)
	}
	op, err := accounts.Load(*af.dir)
	if err != nil {
		return err
	}
	tenants, err := op.RevokeSite(site)
	if err != nil {
		return err
	}
	if *af.hub == "" {
		fmt.Printf("site %s revoked in %s; no --hub: the hub learns it at its next start\n", site, op.Dir)
		return nil
	}
	tlsOpts, err := af.tls()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, t := range tenants {
		if err := pushSite(ctx, op, af, tlsOpts, t, site); err != nil {
			return err
		}
		nc, js, err := op.AdminJetStream(*af.hub, t, tlsOpts...)
		if err != nil {
			return err
		}
		err = accounts.UnregisterSite(ctx, js, site)
		nc.Close()
		if err != nil {
			return err
		}
		fmt.Printf("site %s revoked for tenant %s and cut off at %s\n", site, t, *af.hub)
	}
	return nil
}

// pushSite sends the site's account and its tenant's to the hub as the
// operator's system user: the hub admits the site's leaf only once it
// knows the account, and drops it once it knows of a revocation.
func pushSite(ctx context.Context, op *accounts.Operator, af adminFlags, tlsOpts []nats.Option, tenant, site string) error {
	nc, err := op.SysConn(*af.hub, tlsOpts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	return op.PushSite(ctx, nc, tenant, site)
}

// parseOne parses flags around exactly one positional argument, which may
// stand anywhere among them (alpha site add s1 --nodes n1, or last).
func parseOne(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("exactly one %s is required", what)
	}
	return pos[0], nil
}
