package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// Files of a site bundle, the directory `alpha site add` writes and the
// operator copies to the site (/etc/alpha/site on the node).
const (
	SiteFile        = "site.json"
	LeafCredsFile   = "leaf.creds"
	TrustedKeysFile = "trusted-keys"
	// SiteOperatorSeedFile is the nkey of people working at the site: it
	// may set and release holds and read the site's status at the leaf,
	// nothing else (SiteOperatorPermissions), and works with the uplink
	// down (alpha hold --creds).
	SiteOperatorSeedFile = "site-operator.nk"
	// HubOutputsKeyFile holds the public key of the hub's outputs key:
	// agents accept cloud outputs signed with it only.
	HubOutputsKeyFile = "hub-outputs.pub"
)

// AgentSeedFile is the file of a node's agent nkey seed in a site bundle.
func AgentSeedFile(node string) string { return "agent-" + node + ".nk" }

// SiteConfig describes a site bundle: which tenant's account its leaf joins
// and which agents its leaf lets in.
type SiteConfig struct {
	Site   string       `json:"site"`
	Tenant string       `json:"tenant"`
	Agents []AgentEntry `json:"agents"`
	// Operator is the site operator's public nkey.
	Operator string `json:"operator,omitempty"`
}

// AgentEntry is one node's agent: its public nkey.
type AgentEntry struct {
	Node string `json:"node"`
	Key  string `json:"key"`
}

// siteRecord is what the operator directory remembers of a site, so revoke
// knows which users to cut off.
type siteRecord struct {
	Site    string              `json:"site"`
	Tenants map[string][]string `json:"tenants"` // tenant -> leaf user keys issued
}

// AddSite issues a site's credentials for one tenant into outDir: the leaf's
// creds (a user of the site's own account, which imports from the tenant's
// only the site's mirror, uplink and replies; see siteaccount.go; Push it
// with PushSite), one nkey seed per node's agent, the tenant's trusted
// publisher keys, and site.json. Issuing again rotates: the new leaf user
// works at once, old ones stay valid until revoked.
func (o *Operator) AddSite(site, tenant string, nodes []string, outDir string) (*SiteConfig, error) {
	if err := streams.ValidID("site", site); err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("accounts: at least one node is required (--nodes)")
	}
	// Everything is checked before a credential is issued: a user issued
	// and then not recorded would be one revoke does not know of.
	for _, n := range nodes {
		if err := streams.ValidID("node", n); err != nil {
			return nil, err
		}
	}
	if err := streams.ValidID("tenant", tenant); err != nil {
		return nil, err
	}
	tac, err := o.Account(tenant)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o700); err != nil {
		return nil, err
	}
	if _, err := o.ensureExports(tenant, tac); err != nil {
		return nil, err
	}
	if _, err := o.ensureSiteAccount(tenant, site, tac); err != nil {
		return nil, err
	}
	upub, err := o.issueUser(SiteAccount(tenant, site), "leaf-"+site, LeafPermissions(site), filepath.Join(outDir, LeafCredsFile),
		jwt.ConnectionTypeLeafnode)
	if err != nil {
		return nil, err
	}
	cfg := &SiteConfig{Site: site, Tenant: tenant}
	for _, n := range nodes {
		pub, err := writeUserSeed(filepath.Join(outDir, AgentSeedFile(n)))
		if err != nil {
			return nil, err
		}
		cfg.Agents = append(cfg.Agents, AgentEntry{Node: n, Key: pub})
	}
	if cfg.Operator, err = writeUserSeed(filepath.Join(outDir, SiteOperatorSeedFile)); err != nil {
		return nil, err
	}
	pk, err := o.PublisherKey(tenant)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(outDir, TrustedKeysFile), []byte(pk+"\n"), 0o644); err != nil {
		return nil, err
	}
	hk, err := o.HubOutputsKey()
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(outDir, HubOutputsKeyFile), []byte(hk+"\n"), 0o644); err != nil {
		return nil, err
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := writeFile(filepath.Join(outDir, SiteFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	rec, err := o.siteRecord(site)
	if err != nil {
		return nil, err
	}
	rec.Tenants[tenant] = append(rec.Tenants[tenant], upub)
	return cfg, o.saveSiteRecord(rec)
}

// writeUserSeed makes a user nkey, writes its seed to path (0600) and
// returns its public key.
func writeUserSeed(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	seed, _ := kp.Seed()
	pub, _ := kp.PublicKey()
	return pub, writeFile(path, append(seed, '\n'), 0o600)
}

// RevokeSite revokes every leaf user ever issued to the site, in every
// tenant, and returns those tenants: their accounts and the site's changed
// (PushSite them). Users are revoked in the tenant's account as well, where
// sites issued before site accounts have theirs.
func (o *Operator) RevokeSite(site string) ([]string, error) {
	rec, err := o.siteRecord(site)
	if err != nil {
		return nil, err
	}
	if len(rec.Tenants) == 0 {
		return nil, fmt.Errorf("accounts: site %q was never added", site)
	}
	var tenants []string
	for t, users := range rec.Tenants {
		if err := o.Revoke(t, users...); err != nil {
			return nil, err
		}
		if _, err := o.Account(SiteAccount(t, site)); err == nil {
			if err := o.Revoke(SiteAccount(t, site), users...); err != nil {
				return nil, err
			}
		}
		tenants = append(tenants, t)
	}
	return tenants, nil
}

// RevokePrevious revokes every leaf user issued to the site for tenant
// before the newest one (the one AddSite just issued), in the site's
// account and the tenant's: the way to retire a stolen or old bundle while
// the site moves to its new one, and to move a site issued before site
// accounts (whose leaf user is in the tenant's account, with its wider
// reach) into its own account. It returns how many it revoked; PushSite
// makes it effective.
func (o *Operator) RevokePrevious(site, tenant string) (int, error) {
	if err := streams.ValidID("site", site); err != nil {
		return 0, err
	}
	rec, err := o.siteRecord(site)
	if err != nil {
		return 0, err
	}
	users := rec.Tenants[tenant]
	if len(users) < 2 {
		return 0, nil
	}
	// Those not revoked already (a rotation before this one).
	tac, err := o.Account(tenant)
	if err != nil {
		return 0, err
	}
	var old []string
	for _, u := range users[:len(users)-1] {
		if _, done := tac.Revocations[u]; !done {
			old = append(old, u)
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	if err := o.Revoke(tenant, old...); err != nil {
		return 0, err
	}
	if _, err := o.Account(SiteAccount(tenant, site)); err == nil {
		if err := o.Revoke(SiteAccount(tenant, site), old...); err != nil {
			return 0, err
		}
	}
	return len(old), nil
}

func (o *Operator) siteRecord(site string) (*siteRecord, error) {
	rec := &siteRecord{Site: site, Tenants: map[string][]string{}}
	raw, err := os.ReadFile(filepath.Join(o.Dir, "sites", site+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, rec); err != nil {
		return nil, fmt.Errorf("accounts: sites/%s.json: %w", site, err)
	}
	return rec, nil
}

func (o *Operator) saveSiteRecord(rec *siteRecord) error {
	b, _ := json.MarshalIndent(rec, "", "  ")
	return writeFile(filepath.Join(o.Dir, "sites", rec.Site+".json"), append(b, '\n'), 0o600)
}

// RegisterSite puts the site's plumbing in place at the hub, with the
// tenant administrator's rights the leaf does not have: the durable mirror
// consumers on the hub's stores, filtered to the site's keys
// (leaf.RegisterSites). Idempotent.
func RegisterSite(ctx context.Context, hub jetstream.JetStream, site string) error {
	return RegisterSiteQuota(ctx, hub, site, nil)
}

// RegisterSiteQuota is RegisterSite that also sets the site's quota at the
// hub (nil: a new site has the defaults, an existing one keeps its own).
func RegisterSiteQuota(ctx context.Context, hub jetstream.JetStream, site string, quota *streams.SiteQuota) error {
	return RegisterSites(ctx, hub, []string{site}, quota)
}

// RegisterSites is RegisterSiteQuota for many sites.
func RegisterSites(ctx context.Context, hub jetstream.JetStream, sites []string, quota *streams.SiteQuota) error {
	if err := leaf.RegisterSites(ctx, hub, sites, quota); err != nil {
		return fmt.Errorf("accounts: %w", err)
	}
	return nil
}

// UnregisterSite removes what RegisterSite made; revocation calls it so the
// hub stops serving a cut-off site. It also purges the site's status keys
// at the hub: a cut-off site has no live status, and whatever a thief wrote
// there under the site's own name goes with it. Its telemetry and events
// stay (history). Idempotent.
func UnregisterSite(ctx context.Context, hub jetstream.JetStream, site string) error {
	for _, st := range streams.Mirrored() {
		cc := streams.MirrorConsumerConfig(site, st)
		if err := hub.DeleteConsumer(ctx, st.Stream(), cc.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("accounts: deleting %s: %w", cc.Durable, err)
		}
	}
	if kv, err := hub.KeyValue(ctx, streams.QuotasBucket); err == nil {
		if err := kv.Purge(ctx, site); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("accounts: site %s's quota: %w", site, err)
		}
	}
	s, err := hub.Stream(ctx, streams.StatusStream)
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(streams.UplinkSubjects(streams.StatusStream, site))); err != nil {
		return fmt.Errorf("accounts: purging site %s's status keys: %w", site, err)
	}
	return nil
}

// LoadSite reads a site bundle's site.json.
func LoadSite(dir string) (*SiteConfig, error) {
	raw, err := os.ReadFile(filepath.Join(dir, SiteFile))
	if err != nil {
		return nil, fmt.Errorf("accounts: site bundle %s: %w", dir, err)
	}
	var c SiteConfig
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("accounts: %s/%s: %w", dir, SiteFile, err)
	}
	if err := streams.ValidID("site", c.Site); err != nil {
		return nil, fmt.Errorf("accounts: %s/%s: %w", dir, SiteFile, err)
	}
	return &c, nil
}

// LeafSetup is what a site leaf needs under operator mode.
type LeafSetup struct {
	// Options sets the uplink's credentials and the agents allowed in.
	Options func(*server.Options) error
	// ClientOptions authenticate the leaf's own in-process connection.
	ClientOptions []nats.Option
}

// Leaf prepares a leaf from a site bundle: the uplink authenticates with
// leaf.creds; the leaf's client listener admits only the bundle's agents,
// each limited to its own keys, plus the leaf's own in-process connection
// (a key made fresh at every start, never written anywhere).
func Leaf(bundleDir string) (*LeafSetup, error) {
	cfg, err := LoadSite(bundleDir)
	if err != nil {
		return nil, err
	}
	creds := filepath.Join(bundleDir, LeafCredsFile)
	if _, err := os.Stat(creds); err != nil {
		return nil, fmt.Errorf("accounts: site bundle %s: %w", bundleDir, err)
	}
	self, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	selfPub, _ := self.PublicKey()
	users := []*server.NkeyUser{{Nkey: selfPub}}
	for _, a := range cfg.Agents {
		if !nkeys.IsValidPublicUserKey(a.Key) {
			return nil, fmt.Errorf("accounts: %s: agent %s key %q is not a user public key", bundleDir, a.Node, a.Key)
		}
		users = append(users, &server.NkeyUser{Nkey: a.Key, Permissions: AgentPermissions(cfg.Site, a.Node),
			AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeStandard: {}}})
	}
	if cfg.Operator != "" { // bundles issued before site operators have none
		if !nkeys.IsValidPublicUserKey(cfg.Operator) {
			return nil, fmt.Errorf("accounts: %s: operator key %q is not a user public key", bundleDir, cfg.Operator)
		}
		users = append(users, &server.NkeyUser{Nkey: cfg.Operator, Permissions: SiteOperatorPermissions(cfg.Site),
			AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeStandard: {}}})
	}
	setup := &LeafSetup{
		Options: func(opts *server.Options) error {
			for _, r := range opts.LeafNode.Remotes {
				r.Credentials = creds
			}
			opts.Nkeys = users
			ScopedSubjects(opts)
			return nil
		},
		ClientOptions: []nats.Option{nats.Nkey(selfPub, self.Sign)},
	}
	return setup, nil
}

// AgentOptions authenticate a node's agent at its leaf with its seed file
// and put its inboxes where its permissions allow.
func AgentOptions(site, node, seedFile string) ([]nats.Option, error) {
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		return nil, fmt.Errorf("accounts: agent seed %s: %w", seedFile, err)
	}
	return []nats.Option{opt, nats.CustomInboxPrefix(AgentInbox(site, node))}, nil
}

// ReadTrustedKeys reads publisher public keys, one a line (# comments).
func ReadTrustedKeys(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keys []string
	for i, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if !nkeys.IsValidPublicUserKey(line) {
			return nil, fmt.Errorf("%s:%d: %q is not a publisher public key (U...)", path, i+1, line)
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no trusted keys", path)
	}
	return keys, nil
}

// registerTimeout bounds RegisterSite/UnregisterSite calls made by commands.
const registerTimeout = 15 * time.Second

// AdminJetStream connects to a hub as a tenant's administrator and returns
// its JetStream in the hub's domain; close the connection when done.
func (o *Operator) AdminJetStream(url, tenant string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, append([]nats.Option{nats.UserCredentials(o.AdminCreds(tenant)), nats.Name("alpha-admin-" + tenant),
		nats.Timeout(registerTimeout)}, extra...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("accounts: connecting to hub %s as %s admin: %w", url, tenant, err)
	}
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
