package chaos

import (
	"strings"
	"testing"
	"time"
)

// Rotating a site's credentials with the real CLI, as the README says:
// `alpha site add S --revoke-previous` issues a new bundle (here over the
// old one, where the site reads it) and revokes every earlier leaf
// credential at the hub. The site running the old bundle is cut off at once;
// restarted with the new one it links and converges on the next revision.
// `alpha accounts refresh` then finds nothing to sign again.
func TestRotateSiteCredentials(t *testing.T) {
	f := newFleet(t, 1)
	s := f.addSite(SiteSpec{ID: "rot", OneProcess: true})
	ctx := bg(t, 3*time.Minute)
	f.put(ctx, s, 1, 1)
	f.waitConverged(90 * time.Second)

	out := Run(t, append(AddSiteArgs(f.dir, f.hubs, s.ID, s.Node), "--revoke-previous")...)
	for _, want := range []string{"1 earlier leaf credential(s) revoked", "the hub refuses the earlier credentials"} {
		if !strings.Contains(out, want) {
			t.Fatalf("alpha site add --revoke-previous said:\n%s\nwant %q", out, want)
		}
	}
	// The running site still holds the old credentials: the hub drops it.
	s.Leaf.WaitLog("uplink lost", 30*time.Second)

	s.Leaf.Restart()
	f.put(ctx, s, 2, 1)
	f.waitConverged(90 * time.Second)

	p := f.hubs[0].Prod
	out = Run(t, "accounts", "refresh", "--operator-dir", p.Op.Dir, "--hub", f.hubs[0].ClientURL, "--tls-ca", p.TLS.CA)
	if !strings.Contains(out, "0 account(s) signed again") {
		t.Errorf("alpha accounts refresh on an up-to-date directory said:\n%s", out)
	}
}
