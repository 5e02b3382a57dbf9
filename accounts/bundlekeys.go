package accounts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// BundleTrust is what a site trusts to sign the bundles it imports: the
// keys of its own site bundle (the tenant's publisher keys and the hub's
// outputs key), nothing else.
func BundleTrust(bundleDir string) ([]string, error) {
	keys, err := ReadTrustedKeys(filepath.Join(bundleDir, TrustedKeysFile))
	if err != nil {
		return nil, err
	}
	hub, err := ReadTrustedKeys(filepath.Join(bundleDir, HubOutputsKeyFile))
	if err != nil {
		return nil, err
	}
	return append(keys, hub...), nil
}

// LeafSeed is the seed of the site leaf's user nkey in its bundle's
// leaf.creds: it signs the site's uplink bundles, and the operator
// directory knows its public key (SiteLeafKeys).
func LeafSeed(bundleDir string) ([]byte, error) {
	raw, err := os.ReadFile(filepath.Join(bundleDir, LeafCredsFile))
	if err != nil {
		return nil, fmt.Errorf("accounts: site bundle %s: %w", bundleDir, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(raw)
	if err != nil {
		return nil, fmt.Errorf("accounts: %s/%s: %w", bundleDir, LeafCredsFile, err)
	}
	return kp.Seed()
}

// SiteLeafKeys are the leaf user keys issued to a site for a tenant that
// are not revoked: who may sign the site's uplink bundles.
func (o *Operator) SiteLeafKeys(site, tenant string) ([]string, error) {
	rec, err := o.siteRecord(site)
	if err != nil {
		return nil, err
	}
	ac, err := o.Account(tenant)
	if err != nil {
		return nil, err
	}
	sac, err := o.Account(SiteAccount(tenant, site))
	if errors.Is(err, ErrUnknownTenant) {
		sac = nil // issued before site accounts
	} else if err != nil {
		return nil, err
	}
	var keys []string
	for _, k := range rec.Tenants[tenant] {
		if !revoked(ac, k) && !revoked(sac, k) && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("accounts: site %q has no unrevoked credentials for tenant %q", site, tenant)
	}
	return keys, nil
}

// Revocations lists the user keys a tenant's account and its sites'
// accounts revoke.
func (o *Operator) Revocations(tenant string) ([]string, error) {
	ac, err := o.Account(tenant)
	if err != nil {
		return nil, err
	}
	accs := []*jwt.AccountClaims{ac}
	sites, err := o.siteAccountsOf(tenant)
	if err != nil {
		return nil, err
	}
	for _, n := range sites {
		sac, err := o.Account(n)
		if err != nil {
			return nil, err
		}
		accs = append(accs, sac)
	}
	var out []string
	for _, a := range accs {
		for k := range a.Revocations {
			if k != jwt.All && !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

func revoked(ac *jwt.AccountClaims, user string) bool {
	if ac == nil {
		return false
	}
	_, ok := ac.Revocations[user]
	return ok
}

// SiteTenants lists the tenants a site was added for.
func (o *Operator) SiteTenants(site string) ([]string, error) {
	rec, err := o.siteRecord(site)
	if err != nil {
		return nil, err
	}
	var out []string
	for t := range rec.Tenants {
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("accounts: site %q was never added (alpha site add)", site)
	}
	slices.Sort(out)
	return out, nil
}
