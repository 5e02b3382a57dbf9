package accounts

import "github.com/nats-io/jwt/v2"

// IssueUser issues a plain-client user of any account of the directory
// (tests reach a site account as a client with it).
func (o *Operator) IssueUser(account, name, path string, perms jwt.Permissions) (string, error) {
	return o.issueUser(account, name, perms, path)
}

// IssueLegacyLeaf issues a site's leaf user in its tenant's account, as
// AddSite did before site accounts, and records it for revocation.
func (o *Operator) IssueLegacyLeaf(site, tenant, path string) error {
	upub, err := o.issueUser(tenant, "leaf-"+site, LeafPermissions(site), path, jwt.ConnectionTypeLeafnode)
	if err != nil {
		return err
	}
	rec, err := o.siteRecord(site)
	if err != nil {
		return err
	}
	rec.Tenants[tenant] = append(rec.Tenants[tenant], upub)
	return o.saveSiteRecord(rec)
}

// DropExports saves a tenant's account without exports, as accounts made
// before site accounts are.
func (o *Operator) DropExports(tenant string) error {
	ac, err := o.Account(tenant)
	if err != nil {
		return err
	}
	ac.Exports = nil
	return o.saveAccount(tenant, ac)
}

// DropSiteCaps saves a site's account without its subscription and link
// caps, as site accounts were made before the caps.
func (o *Operator) DropSiteCaps(tenant, site string) error {
	ac, err := o.Account(SiteAccount(tenant, site))
	if err != nil {
		return err
	}
	ac.Limits.Subs, ac.Limits.LeafNodeConn = jwt.NoLimit, jwt.NoLimit
	return o.saveAccount(SiteAccount(tenant, site), ac)
}
