// Package accounts runs Alpha in NATS operator mode: it creates the operator,
// the system account and one account per tenant, issues the credentials of
// hubs, sites and agents with the narrowest permissions that still work, and
// revokes them while the hub runs.
//
// Everything lives in one directory (the operator directory):
//
//	operator.jwt              the operator, trusted by the hub
//	accounts/<name>.jwt       the system account (SYS) and every tenant's account
//	accounts/sites/<tenant>/<site>.jwt  each site's own account (siteaccount.go)
//	accounts/<tenant>.publisher  the tenant's publisher public key (the hub checks signatures)
//	keys/                     private seeds (0700 dir, 0600 files): operator, accounts, publishers
//	creds/sys.creds           system user: pushes account updates (revocations)
//	creds/<tenant>-admin.creds  the tenant's administrator (site add, publishing)
//	creds/hub-outputs.nk      the hub's seed that signs cloud outputs (the hub reads it)
//	sites/<site>.json         which users a site was issued, for revocation
//	creds/cluster.secret      route password of the hub cluster's members
//
// The hub uses the full directory resolver (accounts stored in its store
// directory), so account JWTs pushed over $SYS.REQ.CLAIMS.UPDATE take effect
// at once, without a restart, and survive one.
//
// Tenants: each tenant is an account with its own JetStream at the hub
// (buckets, streams, consumers); tenants' accounts share nothing. Each
// site's leaf binds to an account of its own that imports the site's
// plumbing from its tenant's (siteaccount.go). A site that serves
// several tenants runs one leaf per tenant, each with its own bundle, store
// and listener, so the tenant's mirror, status and telemetry stay apart at
// the site too. One leaf with a local account and a remote per tenant would
// save a process per tenant; the leaf package does not do that yet.
package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// SystemAccount is the name of the system account's files.
const SystemAccount = "SYS"

// ErrUnknownTenant is returned for a tenant the operator directory does not hold.
var ErrUnknownTenant = errors.New("unknown tenant")

// Operator is a loaded operator directory.
type Operator struct {
	Dir    string
	key    nkeys.KeyPair
	claims *jwt.OperatorClaims
	jwt    string
}

// Init creates a new operator directory with the system account and one
// account per tenant. It refuses to overwrite an existing one: the keys in
// it are the root of trust of every credential issued.
func Init(dir, name string, tenants []string) (*Operator, error) {
	return InitLimits(dir, name, tenants, DefaultTenantLimits)
}

// InitLimits is Init with the tenants' JetStream limits.
func InitLimits(dir, name string, tenants []string, lim TenantLimits) (*Operator, error) {
	if err := lim.Validate(); err != nil {
		return nil, err
	}
	if len(tenants) == 0 {
		return nil, errors.New("accounts: at least one tenant is required")
	}
	for _, t := range tenants {
		if err := streams.ValidID("tenant", t); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "operator.jwt")); err == nil {
		return nil, fmt.Errorf("accounts: %s already holds an operator; use it or choose another --dir", dir)
	}
	for _, sub := range []string{"", "accounts", "creds", "sites"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o700); err != nil {
		return nil, err
	}
	okp, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	if err := writeSeed(dir, "operator", okp); err != nil {
		return nil, err
	}
	opub, _ := okp.PublicKey()
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	if err := writeSeed(dir, SystemAccount, sys); err != nil {
		return nil, err
	}
	syspub, _ := sys.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = name
	oc.SystemAccount = syspub
	ojwt, err := oc.Encode(okp)
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "operator.jwt"), []byte(ojwt), 0o644); err != nil {
		return nil, err
	}
	o := &Operator{Dir: dir, key: okp, claims: oc, jwt: ojwt}
	sc := jwt.NewAccountClaims(syspub)
	sc.Name = SystemAccount
	// The system account has its own exports by default; no JetStream.
	if err := o.saveAccount(SystemAccount, sc); err != nil {
		return nil, err
	}
	if err := o.issue(SystemAccount, "sys", jwt.Permissions{}, filepath.Join(dir, "creds", "sys.creds")); err != nil {
		return nil, err
	}
	if err := writeClusterSecret(o); err != nil {
		return nil, err
	}
	for _, t := range tenants {
		if err := o.SetTenant(t, lim); err != nil {
			return nil, err
		}
	}
	if _, err := o.HubOutputsKey(); err != nil {
		return nil, err
	}
	return o, nil
}

// Load opens an operator directory made by Init.
//
// A hub needs only the public part: operator.jwt, accounts/ and the
// tenants' admin creds; without keys/operator.nk the directory loads, and
// only changes to accounts (tenant-add, revoke) are refused.
func Load(dir string) (*Operator, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "operator.jwt"))
	if err != nil {
		return nil, fmt.Errorf("accounts: %s is not an operator directory (alpha accounts init): %w", dir, err)
	}
	okp, err := readSeed(dir, "operator")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	oc, err := jwt.DecodeOperatorClaims(string(raw))
	if err != nil {
		return nil, fmt.Errorf("accounts: %s/operator.jwt: %w", dir, err)
	}
	return &Operator{Dir: dir, key: okp, claims: oc, jwt: string(raw)}, nil
}

// TenantLimits bound a tenant account's JetStream at the hub. Streams
// with a byte limit reserve it against Storage when they are created (the
// hub's uplink streams and every site's landing streams do), so Storage
// also caps how many sites a tenant can register; past a limit the hub
// refuses the stream, consumer or message with "insufficient resources".
type TenantLimits struct {
	Storage   int64 // file storage, bytes
	Memory    int64 // memory storage, bytes
	Streams   int64
	Consumers int64
}

// DefaultTenantLimits: 8 GiB of files (the uplink streams' 1.6 GiB plus
// about 120 sites at the default quota of 52 MiB each), 64 MiB of memory,
// 1024 streams (4 landing streams a site: status, telemetry, events, logs) and 4096 consumers.
//
// A standalone hub reserves every tenant's Storage and Memory against its
// own store (by default 75% of the disk free at start): a tenant whose
// limits no longer fit gets no JetStream at all, and the hub says so at
// start. Raise the hub's store or lower the tenants' limits.
var DefaultTenantLimits = TenantLimits{Storage: 8 << 30, Memory: 64 << 20, Streams: 1024, Consumers: 4096}

// Validate names the first limit that is neither positive nor -1
// (unlimited).
func (l TenantLimits) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"storage", l.Storage}, {"memory", l.Memory}, {"streams", l.Streams}, {"consumers", l.Consumers}} {
		if f.v == 0 || f.v < -1 {
			return fmt.Errorf("accounts: tenant limit %s %d must be positive or -1 (unlimited)", f.name, f.v)
		}
	}
	return nil
}

func (l TenantLimits) jwt() jwt.JetStreamLimits {
	return jwt.JetStreamLimits{MemoryStorage: l.Memory, DiskStorage: l.Storage, Streams: l.Streams, Consumer: l.Consumers, MaxAckPending: -1}
}

// AddTenant creates a tenant's account (JetStream enabled: without it
// mirrors are created, never sync, and log nothing) with the default
// limits, its administrator and its blueprint publisher key. Idempotent for
// an existing tenant.
func (o *Operator) AddTenant(t string) error {
	return o.addTenant(t, DefaultTenantLimits, false)
}

// SetTenant is AddTenant with limits; an existing tenant's account gets
// them too (Push it to a running hub).
func (o *Operator) SetTenant(t string, lim TenantLimits) error {
	return o.addTenant(t, lim, true)
}

func (o *Operator) addTenant(t string, lim TenantLimits, update bool) error {
	if err := streams.ValidID("tenant", t); err != nil {
		return err
	}
	if err := lim.Validate(); err != nil {
		return err
	}
	if ac, err := o.Account(t); err == nil {
		if err := o.backfillPublisher(t); err != nil {
			return err
		}
		if !update || ac.Limits.JetStreamLimits == lim.jwt() {
			return nil
		}
		ac.Limits.JetStreamLimits = lim.jwt()
		return o.saveAccount(t, ac)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		return err
	}
	if err := writeSeed(o.Dir, t, akp); err != nil {
		return err
	}
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = t
	ac.Limits.JetStreamLimits = lim.jwt()
	ac.Exports = tenantExports()
	if err := o.saveAccount(t, ac); err != nil {
		return err
	}
	if err := o.issue(t, t+"-admin", jwt.Permissions{}, o.AdminCreds(t)); err != nil {
		return err
	}
	pkp, err := nkeys.CreateUser()
	if err != nil {
		return err
	}
	if err := writeSeed(o.Dir, t+"-publisher", pkp); err != nil {
		return err
	}
	ppub, _ := pkp.PublicKey()
	// Public, beside the account: a hub holds accounts/ but not keys/, and
	// provisions only blueprints signed by this key.
	return writeFile(o.publisherFile(t), []byte(ppub+"\n"), 0o644)
}

// backfillPublisher writes accounts/<tenant>.publisher for a tenant made
// before that file existed, from its seed, so tenant-add on an older
// directory prepares it for a hub without keys/.
func (o *Operator) backfillPublisher(t string) error {
	if _, err := os.Stat(o.publisherFile(t)); err == nil {
		return nil
	}
	kp, err := readSeed(o.Dir, t+"-publisher")
	if err != nil {
		return nil // a hub's copy: nothing to backfill from
	}
	pub, _ := kp.PublicKey()
	return writeFile(o.publisherFile(t), []byte(pub+"\n"), 0o644)
}

func (o *Operator) publisherFile(tenant string) string {
	return filepath.Join(o.Dir, "accounts", tenant+".publisher")
}

// Tenants lists the tenants, sorted.
func (o *Operator) Tenants() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(o.Dir, "accounts"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		n := strings.TrimSuffix(e.Name(), ".jwt")
		if n != e.Name() && n != SystemAccount {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Account returns a tenant's (or SYS's) account claims.
func (o *Operator) Account(name string) (*jwt.AccountClaims, error) {
	raw, err := os.ReadFile(filepath.Join(o.Dir, "accounts", name+".jwt"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("accounts: tenant %q: %w", name, ErrUnknownTenant)
	}
	if err != nil {
		return nil, err
	}
	return jwt.DecodeAccountClaims(string(raw))
}

// AccountJWT returns an account's encoded JWT.
func (o *Operator) AccountJWT(name string) (string, error) {
	raw, err := os.ReadFile(filepath.Join(o.Dir, "accounts", name+".jwt"))
	return string(raw), err
}

// AdminCreds is the path of a tenant administrator's credentials.
func (o *Operator) AdminCreds(tenant string) string {
	return filepath.Join(o.Dir, "creds", tenant+"-admin.creds")
}

// SysCreds is the path of the system user's credentials.
func (o *Operator) SysCreds() string { return filepath.Join(o.Dir, "creds", "sys.creds") }

// PublisherSeed is the path of a tenant's blueprint publisher seed.
func (o *Operator) PublisherSeed(tenant string) string {
	return filepath.Join(o.Dir, "keys", tenant+"-publisher.nk")
}

// PublisherKey is the public key agents of the tenant trust. It is read
// from accounts/<tenant>.publisher, which a hub's copy of the directory
// holds, or, in a directory made before that file existed, from the seed.
func (o *Operator) PublisherKey(tenant string) (string, error) {
	raw, err := os.ReadFile(o.publisherFile(tenant))
	if err == nil {
		k := strings.TrimSpace(string(raw))
		if !nkeys.IsValidPublicUserKey(k) {
			return "", fmt.Errorf("accounts: %s: %q is not a publisher public key (U...)", o.publisherFile(tenant), k)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	kp, err := readSeed(o.Dir, tenant+"-publisher")
	if err != nil {
		return "", fmt.Errorf("accounts: tenant %s: neither %s nor the publisher seed: %w", tenant, o.publisherFile(tenant), err)
	}
	return kp.PublicKey()
}

// HubOutputsSeed is the path of the seed the hub signs cloud outputs with.
// It sits under creds/, beside what the hub uses at run time, not under
// keys/ with the seeds that only issue credentials.
func (o *Operator) HubOutputsSeed() string { return filepath.Join(o.Dir, "creds", "hub-outputs.nk") }

// HubOutputsKey is the public key agents trust for cloud outputs. The seed
// is made on first need, so an operator directory from before signed
// outputs gets one at its next `site add`.
func (o *Operator) HubOutputsKey() (string, error) {
	path := o.HubOutputsSeed()
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateUser()
		if err != nil {
			return "", err
		}
		seed, _ := kp.Seed()
		if err := writeFile(path, append(seed, '\n'), 0o600); err != nil {
			return "", err
		}
		return kp.PublicKey()
	}
	if err != nil {
		return "", err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(raw))))
	if err != nil {
		return "", fmt.Errorf("accounts: %s: %w", path, err)
	}
	return kp.PublicKey()
}

// HubOptions configures a hub's server for operator mode: the trusted
// operator, the system account, the full directory resolver under
// resolverDir (seeded with the operator directory's accounts, newer JWTs
// already there win), and the scoped JetStream reply and ack subjects that
// let site permissions name their own streams and consumers.
func (o *Operator) HubOptions(resolverDir string) func(*server.Options) error {
	return func(opts *server.Options) error {
		res, err := server.NewDirAccResolver(resolverDir, 0, 2*time.Minute, server.NoDelete)
		if err != nil {
			return fmt.Errorf("accounts: resolver %s: %w", resolverDir, err)
		}
		names, err := o.Tenants()
		if err != nil {
			return err
		}
		sites, err := o.siteAccounts()
		if err != nil {
			return err
		}
		for _, n := range append(append(names, SystemAccount), sites...) {
			ac, err := o.Account(n)
			if err != nil {
				return err
			}
			j, _ := o.AccountJWT(n)
			if err := res.Store(ac.Subject, j); err != nil {
				return fmt.Errorf("accounts: storing account %s: %w", n, err)
			}
		}
		opts.TrustedOperators = []*jwt.OperatorClaims{o.claims}
		opts.SystemAccount = o.claims.SystemAccount
		opts.AccountResolver = res
		ScopedSubjects(opts)
		return nil
	}
}

// ScopedSubjects turns on the v2 formats of JetStream's internal reply, ack
// and flow-control subjects, which carry domain, account, stream and
// consumer: with them a site's permissions can allow exactly its own.
func ScopedSubjects(opts *server.Options) {
	if opts.FeatureFlags == nil {
		opts.FeatureFlags = map[string]bool{}
	}
	opts.FeatureFlags[server.FeatureFlagJsAckFormatV2] = true
	opts.FeatureFlags[server.FeatureFlagJsAPIReplyFormatV2] = true
}

// Push sends an account's current JWT to a running hub through the system
// account, so a change (a revocation) takes effect without a restart.
func (o *Operator) Push(ctx context.Context, url string, name string, extra ...nats.Option) error {
	j, err := o.AccountJWT(name)
	if err != nil {
		return err
	}
	nc, err := o.SysConn(url, extra...)
	if err != nil {
		return err
	}
	defer nc.Close()
	return PushJWT(ctx, nc, j)
}

// PushJWT sends an account JWT over a system-account connection and checks
// the server's answer. It first reads the hub's copies of the account (every
// cluster member answers with its own) and refuses to push one that lifts a
// revocation any of them holds: signed from a stale copy of the operator
// directory (a second workstation, a restored backup), it would let revoked
// sites back in, because the hub keeps the newest JWT and a fresh signature
// is the newest. A member that missed a revocation still holds the others'
// copies to compare with.
func PushJWT(ctx context.Context, nc *nats.Conn, accountJWT string) error {
	ac, err := jwt.DecodeAccountClaims(accountJWT)
	if err != nil {
		return fmt.Errorf("accounts: pushing account: %w", err)
	}
	held, answers, err := lookupJWTs(ctx, nc, ac.Subject)
	if err != nil {
		return err
	}
	same := len(held) > 0 && len(held) == answers
	for _, h := range held {
		if lifted := liftedRevocations(h, ac); len(lifted) > 0 {
			return fmt.Errorf("accounts: not pushing account %q (%s): the hub's copy revokes %d user(s) this operator directory does not (%s): "+
				"the directory is older than the hub's; bring it up to date and run the command again", ac.Name, ac.Subject, len(lifted),
				strings.Join(lifted, ", "))
		}
		same = same && sameClaims(h, ac)
	}
	if same {
		return nil // every member holds these claims already (a tenant pushed with each of its sites)
	}
	msg, err := nc.RequestWithContext(ctx, "$SYS.REQ.CLAIMS.UPDATE", []byte(accountJWT))
	if err != nil {
		return fmt.Errorf("accounts: pushing account: %w", err)
	}
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("accounts: push answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("accounts: hub refused account update: %s", resp.Error.Description)
	}
	return nil
}

// lookupQuiet is how long lookupJWTs waits for one more member's answer
// after the last, when it does not know how many members there are:
// members answer from their own store, in milliseconds.
const lookupQuiet = 250 * time.Millisecond

// lookupJWTs is every answering hub member's copy of an account's JWT and
// how many members answered (a member without a copy answers empty). It
// waits for the first answer as long as ctx allows, then for the other
// members' (members), or until lookupQuiet passes without one.
func lookupJWTs(ctx context.Context, nc *nats.Conn, pub string) ([]*jwt.AccountClaims, int, error) {
	want := members(ctx, nc)
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, 0, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SYS.REQ.ACCOUNT."+pub+".CLAIMS.LOOKUP", inbox, nil); err != nil {
		return nil, 0, fmt.Errorf("accounts: reading the hub's copy of account %s: %w", pub, err)
	}
	var out []*jwt.AccountClaims
	for n := 0; n < want; n++ {
		wait, cancel := ctx, context.CancelFunc(func() {})
		if n > 0 {
			wait, cancel = context.WithTimeout(ctx, lookupQuiet)
		}
		msg, err := sub.NextMsgWithContext(wait)
		cancel()
		if n > 0 && err != nil && ctx.Err() == nil {
			return out, n, nil // the others do not answer (down, or fewer than counted)
		}
		if err != nil {
			return nil, 0, fmt.Errorf("accounts: reading the hub's copy of account %s: %w", pub, err)
		}
		if len(msg.Data) == 0 {
			continue // the resolver's answer for an account it does not know
		}
		ac, err := jwt.DecodeAccountClaims(string(msg.Data))
		if err != nil {
			return nil, 0, fmt.Errorf("accounts: the hub's copy of account %s: %w", pub, err)
		}
		out = append(out, ac)
	}
	return out, want, nil
}

// memberCounts remembers, per system connection, how many hub members
// answer it: a connection pushes many accounts (a fleet's sites), and
// counting costs a quiet period.
var memberCounts sync.Map // *nats.Conn -> int

// members is how many servers the hub behind nc has: 1 when it is not
// clustered, else the number answering a server ping (at least 1).
func members(ctx context.Context, nc *nats.Conn) int {
	if nc.ConnectedClusterName() == "" {
		return 1
	}
	if n, ok := memberCounts.Load(nc); ok {
		return n.(int)
	}
	n := 0
	inbox := nc.NewRespInbox()
	if sub, err := nc.SubscribeSync(inbox); err == nil {
		if nc.PublishRequest("$SYS.REQ.SERVER.PING", inbox, nil) == nil {
			for {
				wait, cancel := context.WithTimeout(ctx, lookupQuiet)
				_, err := sub.NextMsgWithContext(wait)
				cancel()
				if err != nil {
					break
				}
				n++
			}
		}
		sub.Unsubscribe()
	}
	n = max(n, 1)
	memberCounts.Store(nc, n)
	return n
}

// sameClaims reports whether two JWTs of an account say the same thing,
// whenever each was signed and in whatever order their imports and exports
// are listed (encoding sorts them).
func sameClaims(a, b *jwt.AccountClaims) bool {
	norm := func(c *jwt.AccountClaims) string {
		x := *c
		x.IssuedAt, x.ID = 0, ""
		x.Imports = slices.Clone(c.Imports)
		x.Exports = slices.Clone(c.Exports)
		byJSON := func(p, q any) int {
			jp, _ := json.Marshal(p)
			jq, _ := json.Marshal(q)
			return strings.Compare(string(jp), string(jq))
		}
		slices.SortFunc(x.Imports, func(p, q *jwt.Import) int { return byJSON(p, q) })
		slices.SortFunc(x.Exports, func(p, q *jwt.Export) int { return byJSON(p, q) })
		j, err := json.Marshal(x)
		if err != nil {
			return ""
		}
		return string(j)
	}
	na, nb := norm(a), norm(b)
	return na != "" && na == nb
}

// liftedRevocations lists the users held revokes and next does not. When
// does not matter: every user key is issued once, so any revocation of it
// covers its only JWT (two directories that revoked the same stolen site at
// different times are both right).
func liftedRevocations(held, next *jwt.AccountClaims) []string {
	var out []string
	for user := range held.Revocations {
		if _, ok := next.Revocations[user]; !ok {
			out = append(out, user)
		}
	}
	slices.Sort(out)
	return out
}

// Revoke revokes user public keys in a tenant's account and saves it; Push
// makes it effective at a running hub.
func (o *Operator) Revoke(tenant string, users ...string) error {
	ac, err := o.Account(tenant)
	if err != nil {
		return err
	}
	// A revocation covers JWTs issued up to this moment; one second ahead
	// covers a JWT issued within the current second too (iat has seconds).
	at := time.Now().Add(time.Second)
	for _, u := range users {
		ac.RevokeAt(u, at)
	}
	return o.saveAccount(tenant, ac)
}

func (o *Operator) saveAccount(name string, ac *jwt.AccountClaims) error {
	if o.key == nil {
		return fmt.Errorf("accounts: %s/keys/operator.nk is missing: change accounts where the operator's keys are kept", o.Dir)
	}
	// A hub keeps the newer of two JWTs of an account by issue time, in
	// whole seconds, and takes the one it hears last on a tie. Two saves in
	// one second (a revocation right after an add) would tie, and a
	// cluster member syncing the earlier could undo the later
	// (TestStaleClusterMemberCannotLetAStalePushThrough): the next JWT
	// is issued in a later second than the last.
	if prev, err := o.Account(name); err == nil {
		for time.Now().Unix() <= prev.IssuedAt {
			time.Sleep(time.Until(time.Unix(prev.IssuedAt+1, 0)))
		}
	}
	j, err := ac.Encode(o.key)
	if err != nil {
		return fmt.Errorf("accounts: encoding account %s: %w", name, err)
	}
	return writeFile(filepath.Join(o.Dir, "accounts", name+".jwt"), []byte(j), 0o644)
}

// issue creates a user in an account and writes its creds file.
func (o *Operator) issue(account, name string, perms jwt.Permissions, path string) error {
	_, err := o.issueUser(account, name, perms, path)
	return err
}

// issueUser creates a user; connTypes, if given, are the only connection
// types it may use (a site's leaf user is refused as a plain client).
func (o *Operator) issueUser(account, name string, perms jwt.Permissions, path string, connTypes ...string) (string, error) {
	akp, err := readSeed(o.Dir, account)
	if err != nil {
		return "", err
	}
	ukp, err := nkeys.CreateUser()
	if err != nil {
		return "", err
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	uc.Permissions = perms
	uc.AllowedConnectionTypes.Add(connTypes...)
	j, err := uc.Encode(akp)
	if err != nil {
		return "", fmt.Errorf("accounts: user %s: %w", name, err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(j, seed)
	if err != nil {
		return "", err
	}
	return upub, writeFile(path, creds, 0o600)
}

func writeSeed(dir, name string, kp nkeys.KeyPair) error {
	seed, err := kp.Seed()
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "keys", name+".nk"), append(seed, '\n'), 0o600)
}

func readSeed(dir, name string) (nkeys.KeyPair, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "keys", name+".nk"))
	if err != nil {
		return nil, err
	}
	return nkeys.FromSeed([]byte(strings.TrimSpace(string(raw))))
}

// writeFile replaces a file atomically and durably with the given mode,
// creating its directory 0700: a torn key, JWT or site record would lock
// the hub or a site out.
func writeFile(path string, data []byte, mode os.FileMode) error {
	return fileio.WriteFile(path, data, mode, fileio.MkdirAll(0o700))
}
