package accounts

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/streams"
)

// Site accounts. A site's leaf binds at the hub to an account of its own,
// not to its tenant's: the account imports from the tenant's exactly what
// the leaf's link carries (its mirror consumers' resets and flow control,
// its mirrors' deliveries, the ingest under its own name) and holds nothing
// else.
//
// Why: when a leafnode connects, nats-server sends it the interest of the
// whole account it binds to, walking every subscription of that account
// while holding the connection's lock, and the leaf gives up on a hub whose
// answer takes over 2 s. In the tenant's account that walk covered every
// site's mirror consumers (12 subscriptions a site) and every other leaf's
// interest (5 a site): 14-25 ms a connect at 1,000 sites, O(sites^2) for a
// reconnect storm. In its own account a leaf's walk covers its own imports.
//
// The tenant's exports are public, without activation tokens: only the
// operator signs accounts, and every import is written here naming its
// site. A token per import would guard against nothing the operator's key
// cannot do anyway, and a hub checks each token's signature whenever it
// loads the account: 8 per site, 10 % of the hub's CPU in a 1,000-site
// reconnect storm (measured).

// SiteMaxSubs caps the subscriptions of each connection in a site's
// account, i.e. of its leaf link at the hub. nats-server checks a leaf's
// literal subscriptions against its permissions but takes its wildcard ones
// unchecked, so without a cap a stolen site box could hold any amount of
// the hub's memory. An honest leaf holds 4 (measured, TestSiteLeafSubscriptionsAreCapped):
// its three mirrors' deliveries and one more.
const SiteMaxSubs = 1024

// SiteMaxLinks caps the leaf links of a site's account, across a hub
// cluster: the subscription cap is per connection, and a stolen bundle could
// otherwise open any number of links (each naming itself differently) and
// hold SiteMaxSubs on each. Two, not one: the hub counts a half-open link
// whose leaf has already reconnected until it notices it is gone, and a
// member that died is counted until the survivors drop its figures (a lost
// quorum would have to follow for both to bite at once).
const SiteMaxLinks = 2

// siteAccountDir is where site accounts live under accounts/ and keys/.
const siteAccountDir = "sites"

// SiteAccount is the name of a site's account for a tenant, as Account,
// AccountJWT and Push take it.
func SiteAccount(tenant, site string) string {
	return siteAccountDir + "/" + tenant + "/" + site
}

// tenantExports are what a tenant's account offers site accounts.
func tenantExports() jwt.Exports {
	return jwt.Exports{
		// The hub's reset gateway (hub/ingest/reset.go), not the
		// JetStream API: nats-server lets a leaf change the subject its
		// subscriber sees, and JetStream trusts it.
		{Name: "site mirror resets", Subject: jwt.Subject(streams.ResetRoot + ".*.*"), Type: jwt.Service,
			ResponseType: jwt.ResponseTypeSingleton},
		{Name: "site mirror flow control", Subject: jwt.Subject("$JS.FC." + streams.HubDomain + ".>"),
			Type: jwt.Service},
		{Name: "site uplink", Subject: jwt.Subject(streams.IngestRoot + ".*"), Type: jwt.Service,
			ResponseType: jwt.ResponseTypeSingleton},
		{Name: "site mirror deliveries", Subject: "alpha.deliver.*.mirror.>", Type: jwt.Stream},
	}
}

// ensureExports gives a tenant's account the exports site accounts import
// (accounts made before site accounts have none); it reports whether the
// account changed (then Push it).
func (o *Operator) ensureExports(tenant string, ac *jwt.AccountClaims) (bool, error) {
	changed := false
	// Made by an earlier build: the JetStream API itself (see tenantExports).
	if i := slices.IndexFunc(ac.Exports, func(x *jwt.Export) bool { return x.Subject == "$JS.API.CONSUMER.RESET.*.*" }); i >= 0 {
		ac.Exports = slices.Delete(ac.Exports, i, i+1)
		changed = true
	}
	for _, e := range tenantExports() {
		i := slices.IndexFunc(ac.Exports, func(x *jwt.Export) bool {
			return x.Subject == e.Subject && x.Type == e.Type
		})
		switch {
		case i < 0:
			ac.Exports.Add(e)
			changed = true
		case ac.Exports[i].TokenReq != e.TokenReq || ac.Exports[i].ResponseType != e.ResponseType:
			ac.Exports[i] = e
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	return true, o.saveAccount(tenant, ac)
}

// siteImports are the imports of a site's account: each names the site.
func siteImports(site string) []*jwt.Import {
	var out []*jwt.Import
	for _, st := range streams.Mirrored() {
		cc := streams.MirrorConsumerConfig(site, st)
		reset := "CONSUMER.RESET." + st.Stream() + "." + cc.Durable
		out = append(out,
			// The leaf asks in the hub's domain ($JS.hub.API), which the
			// hub maps onto $JS.API in every account a leaf binds to; the
			// tenant's reset gateway takes it from there.
			&jwt.Import{Name: "reset " + cc.Durable, Type: jwt.Service,
				Subject:      jwt.Subject(streams.ResetSubject(st.Stream(), cc.Durable)),
				LocalSubject: jwt.RenamingSubject("$JS.API." + reset)},
			&jwt.Import{Name: "flow control " + cc.Durable, Type: jwt.Service,
				Subject: jwt.Subject("$JS.FC." + streams.HubDomain + ".*." + st.Stream() + "." + cc.Durable + ".*")},
		)
	}
	out = append(out,
		&jwt.Import{Name: "uplink", Type: jwt.Service, Subject: jwt.Subject(streams.IngestSubject(site))},
		&jwt.Import{Name: "mirror deliveries", Type: jwt.Stream, Subject: jwt.Subject(streams.MirrorDeliver(site) + ".>")},
	)
	return out
}

// ensureSiteAccount creates or refreshes a site's account for a tenant:
// its imports, its caps and no JetStream. It returns the account's public
// key.
func (o *Operator) ensureSiteAccount(tenant, site string, tac *jwt.AccountClaims) (string, error) {
	pub, _, err := o.refreshSiteAccount(tenant, site, tac)
	return pub, err
}

// refreshSiteAccount is ensureSiteAccount that also reports whether the
// account changed; an account already in shape is not signed again.
func (o *Operator) refreshSiteAccount(tenant, site string, tac *jwt.AccountClaims) (string, bool, error) {
	name := SiteAccount(tenant, site)
	ac, err := o.Account(name)
	var was *jwt.AccountClaims
	if errors.Is(err, ErrUnknownTenant) {
		kp, err := nkeys.CreateAccount()
		if err != nil {
			return "", false, err
		}
		if err := writeSeed(o.Dir, name, kp); err != nil {
			return "", false, err
		}
		pub, _ := kp.PublicKey()
		ac = jwt.NewAccountClaims(pub)
		ac.Name = tenant + "/" + site
		// No JetStream of its own: the site's stores are at the site.
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{}
	} else if err != nil {
		return "", false, err
	} else {
		prev := *ac
		prev.Imports = slices.Clone(ac.Imports)
		was = &prev
	}
	ac.Limits.Subs = SiteMaxSubs
	ac.Limits.LeafNodeConn = SiteMaxLinks
	ac.Imports = nil
	for _, im := range siteImports(site) {
		im.Account = tac.Subject
		ac.Imports.Add(im)
	}
	if was != nil && sameClaims(was, ac) {
		return ac.Subject, false, nil
	}
	return ac.Subject, true, o.saveAccount(name, ac)
}

// Refresh brings every tenant's and site's account of the directory to the
// shape this build gives new ones (the tenants' exports, the site accounts'
// imports and caps), signing again only those that change, and returns
// their names: push them (PushJWT through Push or PushSite) so a running
// hub applies them. Nothing is issued or revoked. The step after upgrading
// Alpha, so sites added before a cap existed get it without new bundles.
func (o *Operator) Refresh() ([]string, error) {
	tenants, err := o.Tenants()
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, t := range tenants {
		tac, err := o.Account(t)
		if err != nil {
			return nil, err
		}
		// Only tenants with site accounts need the exports.
		sites, err := o.siteAccountsOf(t)
		if err != nil {
			return nil, err
		}
		if len(sites) == 0 {
			continue
		}
		c, err := o.ensureExports(t, tac)
		if err != nil {
			return nil, err
		}
		if c {
			changed = append(changed, t)
		}
		for _, name := range sites {
			site := name[strings.LastIndex(name, "/")+1:]
			_, c, err := o.refreshSiteAccount(t, site, tac)
			if err != nil {
				return nil, err
			}
			if c {
				changed = append(changed, name)
			}
		}
	}
	return changed, nil
}

// siteAccounts lists the names of every site account.
func (o *Operator) siteAccounts() ([]string, error) {
	tenants, err := os.ReadDir(filepath.Join(o.Dir, "accounts", siteAccountDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range tenants {
		if !t.IsDir() {
			continue
		}
		names, err := o.siteAccountsOf(t.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, names...)
	}
	return out, nil
}

// siteAccountsOf lists the names of one tenant's site accounts.
func (o *Operator) siteAccountsOf(tenant string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(o.Dir, "accounts", siteAccountDir, tenant))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if s, ok := strings.CutSuffix(e.Name(), ".jwt"); ok {
			out = append(out, SiteAccount(tenant, s))
		}
	}
	return out, nil
}

// PushSite sends a site's account and its tenant's (whose exports it
// imports) to a running hub over nc, a system-account connection. A site
// issued before site accounts has none; only the tenant's is sent then.
func (o *Operator) PushSite(ctx context.Context, nc *nats.Conn, tenant, site string) error {
	names := []string{tenant}
	if _, err := o.Account(SiteAccount(tenant, site)); err == nil {
		names = append(names, SiteAccount(tenant, site))
	}
	for _, n := range names {
		j, err := o.AccountJWT(n)
		if err != nil {
			return err
		}
		if err := PushJWT(ctx, nc, j); err != nil {
			return fmt.Errorf("pushing %s: %w", n, err)
		}
	}
	return nil
}

// SysConn connects to a hub as the operator's system user.
func (o *Operator) SysConn(url string, extra ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserCredentials(o.SysCreds()), nats.Name("alpha-accounts")}, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("accounts: connecting to hub %s as system: %w", url, err)
	}
	return nc, nil
}
