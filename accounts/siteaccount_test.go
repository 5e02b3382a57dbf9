package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// Every import of a site's account names the site; the leaf's user belongs
// to the site's account.
func TestSiteAccountImportsNameTheSite(t *testing.T) {
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "op"), "test", []string{"t1"})
	check.NoError(t, err)
	// A tenant made before site accounts: no exports yet.
	check.NoError(t, op.DropExports("t1"))
	bundle := filepath.Join(dir, "bundle")
	_, err = op.AddSite("a", "t1", []string{"n1"}, bundle)
	check.NoError(t, err)

	tac, err := op.Account("t1")
	check.NoError(t, err)
	if len(tac.Exports) != 4 {
		t.Fatalf("tenant exports after site add: %d, want 4", len(tac.Exports))
	}
	sac, err := op.Account(accounts.SiteAccount("t1", "a"))
	check.NoError(t, err)
	if sac.Limits.JetStreamLimits.DiskStorage != 0 || sac.Limits.JetStreamLimits.MemoryStorage != 0 {
		t.Errorf("site account has JetStream: %+v", sac.Limits.JetStreamLimits)
	}
	if len(sac.Imports) != 8 {
		t.Fatalf("site account imports: %d, want 8 (3 resets, 3 flow controls, uplink, deliveries)", len(sac.Imports))
	}
	for _, im := range sac.Imports {
		if im.Account != tac.Subject {
			t.Errorf("import %s from %s, want the tenant's account", im.Subject, im.Account)
		}
		s := string(im.Subject)
		if !strings.Contains(s, ".a.") && !strings.HasSuffix(s, ".a") && !strings.Contains(s, "mirror-a-") {
			t.Errorf("import %s does not name site a", s)
		}
	}
	// The leaf user is the site account's.
	raw, err := jwt.ParseDecoratedJWT(mustRead(t, filepath.Join(bundle, accounts.LeafCredsFile)))
	check.NoError(t, err)
	uc, err := jwt.DecodeUserClaims(raw)
	check.NoError(t, err)
	if uc.Issuer != sac.Subject {
		t.Errorf("leaf user issued by %s, want site a's account %s", uc.Issuer, sac.Subject)
	}
	// Adding the site again keeps its account and refreshes its imports.
	_, err = op.AddSite("a", "t1", []string{"n1"}, bundle)
	check.NoError(t, err)
	again, err := op.Account(accounts.SiteAccount("t1", "a"))
	check.NoError(t, err)
	if again.Subject != sac.Subject || len(again.Imports) != 8 {
		t.Errorf("site account after a second add: %s with %d imports, want %s with 8", again.Subject, len(again.Imports), sac.Subject)
	}
	// Revoking the site revokes its leaf user in the account that issued
	// it (the hub checks that account), and the tenant's list has it.
	_, err = op.RevokeSite("a")
	check.NoError(t, err)
	after, err := op.Account(accounts.SiteAccount("t1", "a"))
	check.NoError(t, err)
	if _, ok := after.Revocations[uc.Subject]; !ok {
		t.Errorf("site a's account does not revoke its leaf user %s", uc.Subject)
	}
	revoked, err := op.Revocations("t1")
	check.NoError(t, err)
	if !slices.Contains(revoked, uc.Subject) {
		t.Errorf("revocations of t1 %v lack site a's leaf user %s", revoked, uc.Subject)
	}
}

// A site issued before site accounts (its leaf user in the tenant's
// account) keeps working beside sites with accounts of their own, and its
// revocation cuts it off.
func TestLegacySiteInTenantAccountStillWorks(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleA := e.addSite("a", "t1", "n1")
	bundleOld := e.addSite("old", "t1", "n1")
	// Replace old's leaf credentials with a user of the tenant's account.
	check.NoError(t, e.op.IssueLegacyLeaf("old", "t1", filepath.Join(bundleOld, accounts.LeafCredsFile)))
	la := e.startLeaf(bundleA, nil)
	lold := e.startLeaf(bundleOld, nil)
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "a.n1", []byte("for a"))
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "old.n1", []byte("for old"))
	check.NoError(t, err)
	waitValue(t, e.agentConn(la, bundleA, "a", "n1"), "a", "a.n1", "for a")
	waitValue(t, e.agentConn(lold, bundleOld, "old", "n1"), "old", "old.n1", "for old")
	// Which account each leaf is in at the hub.
	lz, err := e.hub.Server.Leafz(nil)
	check.NoError(t, err)
	tac, err := e.op.Account("t1")
	check.NoError(t, err)
	in := map[string]string{}
	for _, l := range lz.Leafs {
		in[l.Name] = l.Account
	}
	if in["leaf-old"] != tac.Subject {
		t.Errorf("legacy leaf in account %s, want the tenant's %s", in["leaf-old"], tac.Subject)
	}
	if in["leaf-a"] == tac.Subject || in["leaf-a"] == "" {
		t.Errorf("leaf a in account %q, want its own", in["leaf-a"])
	}
	// Revoking old cuts its legacy user off; a stays.
	e.revokeOld(lold)
	if !la.Connected() {
		t.Error("site a's leaf lost its link when old was revoked")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	check.NoError(t, err)
	return b
}

// A bad node or tenant id is refused before any credential is issued: the
// operator directory holds no site account or leaf user for it.
func TestAddSiteChecksBeforeIssuing(t *testing.T) {
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "op"), "test", []string{"t1"})
	check.NoError(t, err)
	for _, c := range []struct {
		tenant string
		nodes  []string
		want   string
	}{
		{"t1", []string{"n1", "Bad Node"}, `node id "Bad Node"`},
		{"SYS", []string{"n1"}, `tenant id "SYS"`},
		{"sites/t1/x", []string{"n1"}, `tenant id "sites/t1/x"`},
	} {
		_, err := op.AddSite("a", c.tenant, c.nodes, filepath.Join(dir, "bundle"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("AddSite(tenant %q, nodes %v): %v, want an error naming %s", c.tenant, c.nodes, err, c.want)
		}
	}
	if _, err := op.Account(accounts.SiteAccount("t1", "a")); err == nil {
		t.Error("a site account was made for a refused site")
	}
	if _, err := os.Stat(filepath.Join(dir, "bundle", accounts.LeafCredsFile)); err == nil {
		t.Error("leaf credentials were written for a refused site")
	}
}

// Red team (operational): an operator directory that missed a revocation (a
// second workstation, a restored backup) must not lift it at the hub. The
// hub keeps the newest JWT it is sent, and every push is freshly signed, so
// without a check a `site add` run from the stale copy would push the
// tenant's account without the revocation and the revoked site would link
// again. The victim is the revoked site's leaf: it stays refused.
func TestStaleOperatorDirCannotLiftRevocations(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleOld := e.addSite("old", "t1", "n1")
	// A legacy leaf (a user of the tenant's account): its revocation lives in
	// the tenant's JWT, which every site add pushes.
	check.NoError(t, e.op.IssueLegacyLeaf("old", "t1", filepath.Join(bundleOld, accounts.LeafCredsFile)))
	lb := &check.Buffer{}
	lold := e.startLeaf(bundleOld, lb)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !lold.Connected() {
			return errors.New("legacy leaf not linked yet")
		}
		return nil
	})
	stale := filepath.Join(t.TempDir(), "op")
	check.NoError(t, os.CopyFS(stale, os.DirFS(e.op.Dir)))

	sys := e.revokeOld(lold)

	// From the stale copy: the site is issued locally, the push is refused
	// naming the account and the lifted revocation.
	sop, err := accounts.Load(stale)
	check.NoError(t, err)
	_, err = sop.AddSite("b", "t1", []string{"n1"}, filepath.Join(t.TempDir(), "b"))
	check.NoError(t, err)
	err = sop.PushSite(ctx, sys, "t1", "b")
	if err == nil || !strings.Contains(err.Error(), `"t1"`) || !strings.Contains(err.Error(), "revokes 2 user") {
		t.Fatalf("push from a stale operator directory: %v, want a refusal naming t1 and the lifted revocation", err)
	}
	// What the victim sees: the hub still holds the revocation, and the
	// revoked leaf, which keeps trying, is still refused.
	tac, err := e.op.Account("t1")
	check.NoError(t, err)
	msg, err := sys.Request("$SYS.REQ.ACCOUNT."+tac.Subject+".CLAIMS.LOOKUP", nil, 5*time.Second)
	check.NoError(t, err)
	held, err := jwt.DecodeAccountClaims(string(msg.Data))
	check.NoError(t, err)
	if len(held.Revocations) == 0 {
		t.Error("the hub's copy of t1 lost its revocations")
	}
	refused := lb.Count("Authorization Violation")
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if lold.Connected() {
			return errors.New("the revoked leaf linked again after the stale push")
		}
		if n := lb.Count("Authorization Violation"); n < refused+2 {
			return fmt.Errorf("revoked leaf refused %d times since the stale push, want 2", n-refused)
		}
		return nil
	})

	// The current directory (which holds the revocation) pushes as before.
	_, err = e.op.AddSite("b", "t1", []string{"n1"}, filepath.Join(t.TempDir(), "b2"))
	check.NoError(t, err)
	check.NoError(t, e.op.PushSite(ctx, sys, "t1", "b"))
}

// revokeOld revokes site "old" of tenant t1, pushes it as `site revoke`
// does and waits until its leaf l is cut off; it returns the system
// connection it pushed on.
func (e *env) revokeOld(l interface{ Connected() bool }) *nats.Conn {
	e.t.Helper()
	_, err := e.op.RevokeSite("old")
	check.NoError(e.t, err)
	sys, err := e.op.SysConn(e.hub.ClientURL(), e.tls())
	check.NoError(e.t, err)
	e.t.Cleanup(sys.Close)
	check.NoError(e.t, e.op.PushSite(context.Background(), sys, "t1", "old"))
	check.For(e.t, 10*time.Second, 20*time.Millisecond, func() error {
		if l.Connected() {
			return errors.New("revoked leaf still linked")
		}
		return nil
	})
	return sys
}

// Moving a site issued before site accounts into its own account: `site add
// --revoke-previous` issues a new bundle and revokes the earlier leaf
// users. The old bundle (a leaf user of the tenant's account, with the
// wider reach PERMISSIONS.md describes) is cut off; the new one links in
// the site's own account and gets its blueprints.
func TestRevokePreviousMovesLegacySite(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundleOld := e.addSite("old", "t1", "n1")
	check.NoError(t, e.op.IssueLegacyLeaf("old", "t1", filepath.Join(bundleOld, accounts.LeafCredsFile)))
	lold := e.startLeaf(bundleOld, nil)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if !lold.Connected() {
			return errors.New("legacy leaf not linked yet")
		}
		return nil
	})

	bundleNew := filepath.Join(t.TempDir(), "new")
	_, err := e.op.AddSite("old", "t1", []string{"n1"}, bundleNew)
	check.NoError(t, err)
	n, err := e.op.RevokePrevious("old", "t1")
	check.NoError(t, err)
	if n != 2 { // the first bundle's site-account user and the legacy one
		t.Errorf("revoked %d earlier users, want 2", n)
	}
	sys, err := e.op.SysConn(e.hub.ClientURL(), e.tls())
	check.NoError(t, err)
	defer sys.Close()
	check.NoError(t, e.op.PushSite(ctx, sys, "t1", "old"))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if lold.Connected() {
			return errors.New("the old bundle's leaf is still linked")
		}
		return nil
	})
	lold.Shutdown()

	lnew := e.startLeaf(bundleNew, nil)
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "old.n1", []byte("after the move"))
	check.NoError(t, err)
	waitValue(t, e.agentConn(lnew, bundleNew, "old", "n1"), "old", "old.n1", "after the move")
	sac, err := e.op.Account(accounts.SiteAccount("t1", "old"))
	check.NoError(t, err)
	lz, err := e.hub.Server.Leafz(nil)
	check.NoError(t, err)
	in := ""
	for _, l := range lz.Leafs {
		if l.Name == "leaf-old" {
			in = l.Account
		}
	}
	if in != sac.Subject {
		t.Errorf("the new bundle's leaf is in account %q, want the site's own %s", in, sac.Subject)
	}
	// Nothing more to revoke: the earlier users are revoked already, and a
	// site never added has none.
	for _, site := range []string{"old", "fresh"} {
		if n, err := e.op.RevokePrevious(site, "t1"); err != nil || n != 0 {
			t.Errorf("RevokePrevious(%s) again: %d, %v; want 0", site, n, err)
		}
	}
}
