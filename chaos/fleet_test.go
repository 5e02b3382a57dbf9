package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// fleet is a hub (or cluster) with sites, as separate processes of the real
// binary, and a client of the hub that writes blueprints and reads status.
type fleet struct {
	t     testing.TB
	dir   string
	hubs  []*Hub
	sites []*Site
	js    jetstream.JetStream // hub domain

	mu   sync.Mutex
	want map[string]want // node key -> last blueprint put
}

type want struct {
	gen, files int
	rev        uint64
}

// newFleet starts a fleet in production mode: operator mode, TLS, signed
// blueprints.
func newFleet(t testing.TB, members int) *fleet { return startFleet(t, members, false) }

// newInsecureFleet starts a fleet with --insecure everywhere, as the dev
// stack runs: the one open-mode partition scenario uses it.
func newInsecureFleet(t testing.TB) *fleet { return startFleet(t, 1, true) }

func startFleet(t testing.TB, members int, insecure bool) *fleet {
	t.Helper()
	f := &fleet{t: t, dir: testDir(t), want: map[string]want{}}
	switch {
	case members <= 1:
		f.hubs = []*Hub{StartHub(t, f.dir, HubSpec{Insecure: insecure})}
	case insecure:
		f.hubs = StartHubClusterProd(t, f.dir, members, nil)
	default:
		f.hubs = StartHubCluster(t, f.dir, members)
	}
	f.connect()
	return f
}

// connect opens the fleet's client of the hub, through every member.
func (f *fleet) connect() {
	var urls []string
	for _, h := range f.hubs {
		urls = append(urls, h.ClientURL)
	}
	nc := Conn(f.t, joinURLs(urls), f.hubs[0].ConnOptions()...)
	var err error
	f.js, err = jetstream.NewWithDomain(nc, "hub")
	check.NoError(f.t, err)
}

func joinURLs(u []string) string {
	s := ""
	for i, x := range u {
		if i > 0 {
			s += ","
		}
		s += x
	}
	return s
}

// addSite starts a site in the fleet's mode.
func (f *fleet) addSite(spec SiteSpec) *Site {
	spec.Insecure = f.hubs[0].Prod == nil
	s := StartSite(f.t, f.dir, f.hubs, spec)
	f.sites = append(f.sites, s)
	return s
}

// member is the index of the hub member named name, -1 if none is.
func (f *fleet) member(name string) int {
	for i, h := range f.hubs {
		if h.Name == name {
			return i
		}
	}
	return -1
}

// mirrorHolder waits until site's blueprints mirror consumer has a leader
// that is a member, and returns that member's index and the consumer's
// replicas.
func (f *fleet) mirrorHolder(ctx context.Context, site string) (member, replicas int) {
	f.t.Helper()
	bp := streams.Store{Bucket: streams.BlueprintsBucket}
	check.For(f.t, 30*time.Second, 200*time.Millisecond, func() error {
		c, err := f.js.PushConsumer(ctx, bp.Stream(), streams.MirrorConsumerConfig(site, bp).Durable)
		if err != nil {
			return err
		}
		info := c.CachedInfo()
		if info.Cluster == nil || f.member(info.Cluster.Leader) < 0 {
			return fmt.Errorf("%s's blueprints mirror consumer is not held by a member: %+v", site, info.Cluster)
		}
		member, replicas = f.member(info.Cluster.Leader), info.Config.Replicas
		return nil
	})
	return member, replicas
}

// put writes generation gen (n files) for a site's node and remembers it as
// the level every check expects.
func (f *fleet) put(ctx context.Context, s *Site, gen, n int) uint64 {
	f.t.Helper()
	rev, err := Put(ctx, f.js, s.Key(), Blueprint(gen, n), f.signer())
	return f.remember(s, gen, n, rev, err)
}

// remember records a put's outcome as the level every check expects.
func (f *fleet) remember(s *Site, gen, n int, rev uint64, err error) uint64 {
	f.t.Helper()
	check.NoError(f.t, err)
	f.mu.Lock()
	f.want[s.Key()] = want{gen: gen, files: n, rev: rev}
	f.mu.Unlock()
	return rev
}

// signer signs blueprints with the tenant's publisher key (nil when
// insecure).
func (f *fleet) signer() Signer {
	if p := f.hubs[0].Prod; p != nil {
		return p.Sign
	}
	return nil
}

// converged says whether a site runs the last blueprint put for it: every
// file has the generation on disk and the hub's status bucket says the
// agent applied that revision.
func (f *fleet) converged(ctx context.Context, s *Site) error {
	f.mu.Lock()
	w, ok := f.want[s.Key()]
	f.mu.Unlock()
	if !ok {
		return nil
	}
	for i := range w.files {
		if g := AppliedGen(s.Root, i); g != w.gen {
			return fmt.Errorf("%s file %d has generation %d, want %d", s.Key(), i, g, w.gen)
		}
	}
	// A request sent while the client fails over may go unanswered.
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ns, err := Status(sctx, f.js, s.Key())
	if err != nil {
		return fmt.Errorf("%s status at hub: %w", s.Key(), err)
	}
	if ns.AppliedRevision != w.rev {
		return fmt.Errorf("%s: hub sees applied revision %d (%s), want %d", s.Key(), ns.AppliedRevision, ns.Phase, w.rev)
	}
	return nil
}

// waitFiles waits until every site's files carry the last generation put
// (applied on disk; the status may not have reached the hub yet).
func (f *fleet) waitFiles(timeout time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	check.For(f.t, timeout, 20*time.Millisecond, func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, s := range f.sites {
			w := f.want[s.Key()]
			for i := range w.files {
				if g := AppliedGen(s.Root, i); g != w.gen {
					return fmt.Errorf("%s file %d has generation %d, want %d", s.Key(), i, g, w.gen)
				}
			}
		}
		return nil
	})
	return time.Since(start)
}

// waitConverged waits until every site converged and returns how long it
// took.
func (f *fleet) waitConverged(timeout time.Duration) time.Duration {
	f.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+5*time.Second)
	defer cancel()
	check.For(f.t, timeout, 100*time.Millisecond, func() error {
		for _, s := range f.sites {
			if err := f.converged(ctx, s); err != nil {
				return err
			}
		}
		return nil
	})
	return time.Since(start)
}

// siteJS is a client of a site's own JetStream domain, at its leaf, with
// the first node's agent credentials: what a process on the node may do.
func (f *fleet) siteJS(s *Site) jetstream.JetStream {
	f.t.Helper()
	js, err := jetstream.NewWithDomain(Conn(f.t, s.ClientURL, s.NodeOptions(f.t, s.Node)...), s.ID)
	check.NoError(f.t, err)
	return js
}

// checkTelemetry waits until the hub holds every one of the n messages a
// site's node published, then requires exactly n stored: 0 lost, 0
// duplicated. It logs the counts.
func (f *fleet) checkTelemetry(s *Site, n int, timeout time.Duration) Count {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	var c Count
	check.For(f.t, timeout, 250*time.Millisecond, func() error {
		var err error
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		if c, err = CountTelemetry(cctx, f.js, s.ID); err != nil {
			return err
		}
		if c.Unique < n {
			return fmt.Errorf("%s: hub has %d of %d telemetry messages", s.ID, c.Unique, n)
		}
		return nil
	})
	f.t.Logf("telemetry %s: published %d, stored at hub %d, unique %d, lost %d, duplicated %d",
		s.ID, n, c.Stored, c.Unique, n-c.Unique, c.Stored-c.Unique)
	if c.Unique != n || c.Stored != n {
		f.t.Fatalf("telemetry %s: published %d, stored %d (unique %d)", s.ID, n, c.Stored, c.Unique)
	}
	return c
}

// testDir is the test's directory; CHAOS_KEEP=1 keeps it (and the process
// logs in it) after the test.
func testDir(t testing.TB) string {
	if os.Getenv("CHAOS_KEEP") == "" {
		return t.TempDir()
	}
	d, err := os.MkdirTemp("", "chaos-"+strings.ReplaceAll(t.Name(), "/", "_")+"-")
	check.NoError(t, err)
	t.Logf("keeping %s", d)
	return d
}

// checkStatusCommand runs `alpha status --json` against the hub and
// requires that it lists every site's node at the revision last put: the
// operator's view agrees with the buckets.
func (f *fleet) checkStatusCommand() {
	f.t.Helper()
	args := []string{"status", "--json", "--nats", f.hubs[0].ClientURL}
	if p := f.hubs[0].Prod; p != nil {
		args = append(args, "--creds", p.AdminCreds(), "--tls-ca", p.TLS.CA)
	}
	out, err := exec.Command(Binary(f.t), args...).Output()
	check.NoError(f.t, err)
	var nodes []struct {
		Site, Node      string
		AppliedRevision uint64 `json:"appliedRevision"`
	}
	check.NoError(f.t, json.Unmarshal(out, &nodes))
	got := map[string]uint64{}
	for _, n := range nodes {
		got[n.Site+"."+n.Node] = n.AppliedRevision
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sites {
		if w := f.want[s.Key()]; got[s.Key()] != w.rev {
			f.t.Fatalf("alpha status --json: %s applied %d, want %d", s.Key(), got[s.Key()], w.rev)
		}
	}
	f.t.Logf("alpha status --json lists %d nodes, each at its last revision", len(f.sites))
}
