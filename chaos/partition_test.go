package chaos_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/leaf"
)

// site is a hub, a proxy standing for the WAN, a site leaf behind it and
// one agent, in process and in production mode (prodEnv).
type site struct {
	t      testing.TB
	env    *prodEnv
	proxy  *chaos.Proxy
	hubURL string
	leaf   *leaf.Leaf
	stopL  func()
	store  string
	root   string
	state  string
	stopA  func()
}

func newSite(t testing.TB) *site {
	e := newProdEnv(t, "s1", "n1")
	u, err := url.Parse(e.hub.LeafURL())
	check.NoError(t, err)
	p, err := chaos.NewProxy("127.0.0.1:0", u.Host)
	check.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	s := &site{t: t, env: e, proxy: p, hubURL: "nats-leaf://" + p.Addr(), store: t.TempDir(), root: t.TempDir(), state: t.TempDir()}
	s.leaf, s.stopL = e.leafAt(s.hubURL, s.store, "127.0.0.1:-1")
	s.stopA = e.agent("n1", s.leaf.ClientURL(), s.root, s.state)
	return s
}

func (s *site) file() string { return filepath.Join(s.root, "etc/app.conf") }

func (s *site) put(content string) {
	s.t.Helper()
	s.env.put("s1.n1", stack.Doc("app", "/etc/app.conf", content))
}

func (s *site) waitLink(up bool) {
	s.t.Helper()
	check.For(s.t, 15*time.Second, 10*time.Millisecond, func() error {
		if s.leaf.Connected() != up {
			return fmt.Errorf("leaf connected=%v, want %v", s.leaf.Connected(), up)
		}
		return nil
	})
}

// outage keeps the link down for d: the duration is the scenario itself,
// not a wait for a condition.
func outage(d time.Duration) { <-time.After(d) }

// catchUp restores the link and returns how long until the file holds want.
func (s *site) catchUp(want string) time.Duration {
	s.t.Helper()
	start := time.Now()
	s.proxy.Set(chaos.Up)
	stack.WaitFile(s.t, 30*time.Second, s.file(), want)
	return time.Since(start)
}

// checkCatchUp fails a catch-up that took as long as a mirror that waits
// for its own retries instead of asking again when the link returns (5 s
// and more: leaf/tune.go). How fast it is belongs to the benchmarks
// (BenchmarkFleetCatchUp45s, BenchmarkCatchUpSiteRestarted: goal p99 1 s,
// 0.08-0.92 s measured); a bound of 2 s here failed runs on a busy machine
// for no fault of the product.
func checkCatchUp(t *testing.T, took time.Duration) {
	t.Helper()
	if took > 5*time.Second {
		t.Errorf("catch-up took %v, want under 5s (a mirror that waited for its retry instead of asking on the link's return)", took)
	}
}

func TestPartition(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   chaos.Mode
		outage time.Duration
	}{
		{"cut 5s", chaos.Cut, 5 * time.Second},
		{"blackhole 5s", chaos.Blackhole, 5 * time.Second},
		{"cut 45s", chaos.Cut, 45 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.outage > 10*time.Second {
				t.Skip("long outage skipped in -short")
			}
			s := newSite(t)
			s.put("v=1\n")
			stack.WaitFile(t, 10*time.Second, s.file(), "v=1\n")
			s.waitLink(true)

			s.proxy.Set(tc.mode)
			if tc.mode == chaos.Cut {
				s.waitLink(false)
			}
			// Cut off, the agent still repairs drift from the site's copy.
			check.NoError(t, os.WriteFile(s.file(), []byte("hand edit\n"), 0o644))
			stack.WaitFile(t, 10*time.Second, s.file(), "v=1\n")
			// The hub moves on during the outage.
			s.put("v=2\n")
			outage(tc.outage)
			check.NoError(t, stack.FileIs(s.file(), "v=1\n"))

			took := s.catchUp("v=2\n")
			t.Logf("%s: update made during the outage applied %v after restore", tc.name, took)
			checkCatchUp(t, took)
		})
	}
}

func TestLeafRestartedOffline(t *testing.T) {
	s := newSite(t)
	s.put("v=1\n")
	stack.WaitFile(t, 10*time.Second, s.file(), "v=1\n")
	s.waitLink(true)
	s.proxy.Set(chaos.Cut)
	s.put("v=2\n")

	// Restart the leaf on the same store and port while the uplink is down.
	addr, err := url.Parse(s.leaf.ClientURL())
	check.NoError(t, err)
	s.stopL()
	s.leaf, s.stopL = s.env.leafAt(s.hubURL, s.store, addr.Host)
	siteBP := s.env.siteBlueprints(s.leaf, "n1")
	e, err := siteBP.Get(context.Background(), "s1.n1")
	check.NoError(t, err) // served at once, from disk, with no hub
	pub, err := s.env.p.Op.PublisherKey(chaos.Tenant)
	check.NoError(t, err)
	bp, err := sign.Open(map[string]bool{pub: true}, "s1.n1", e.Value())
	check.NoError(t, err)
	if string(bp.Blueprint) != stack.Doc("app", "/etc/app.conf", "v=1\n") {
		t.Fatalf("restarted leaf serves %q", bp.Blueprint)
	}
	// The agent keeps repairing through the restarted leaf.
	check.NoError(t, os.WriteFile(s.file(), []byte("hand edit\n"), 0o644))
	stack.WaitFile(t, 10*time.Second, s.file(), "v=1\n")
	// The outage goes on after the restart. (A link back within 2 s of the
	// leaf's start can take up to 2.3 s: the server spaces mirror setup
	// requests 2 s apart; see leaf/tune.go.)
	outage(5 * time.Second)

	took := s.catchUp("v=2\n")
	t.Logf("leaf restarted offline: caught up %v after restore", took)
	checkCatchUp(t, took)
}

func TestAgentRestartedOfflineReapplies(t *testing.T) {
	s := newSite(t)
	s.put("v=1\n")
	stack.WaitFile(t, 10*time.Second, s.file(), "v=1\n")
	// No hub, no leaf: the node is alone.
	s.proxy.Set(chaos.Cut)
	s.stopA()
	s.stopL()
	check.NoError(t, os.Remove(s.file()))
	s.stopA = s.env.agent("n1", s.leaf.ClientURL(), s.root, s.state)
	stack.WaitFile(t, 5*time.Second, s.file(), "v=1\n")
	if _, err := os.Stat(s.file()); errors.Is(err, os.ErrNotExist) {
		t.Fatal("not re-applied")
	}
}
