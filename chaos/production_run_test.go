package chaos

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

var productionRun = flag.Duration("production-run", 10*time.Minute,
	"how long TestProductionSiteRun runs the site (CHAOS_PRODUCTION_RUN overrides; -short: 1m)")

// productionRunFor is the run's length: the environment, then -short,
// then the flag.
func productionRunFor(t *testing.T) time.Duration {
	if v := os.Getenv("CHAOS_PRODUCTION_RUN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("CHAOS_PRODUCTION_RUN %q: %v", v, err)
		}
		return d
	}
	if testing.Short() {
		return time.Minute
	}
	return *productionRun
}

// violationRE matches nats-server's permission violation lines (client.go:
// `Publish Violation - Subject "X"`, `Subscription Violation - Subject
// "X"`, leafnode.go: `Publish Violation on "X"`) and nats.go's error as
// a client logs it (`Permissions Violation for Publish to "X"`), logged
// with slog's quoting; the group is the subject.
var violationRE = regexp.MustCompile(`(?i)(?:(?:publish|subscription) violation(?: - subject| - reply| on)|permissions violation for (?:publish|subscription)(?: with reply of| to)) \\?"([^"\\]*)`)

// violations counts a process's permission violations by subject.
func violations(p *Proc) map[string]int {
	out := map[string]int{}
	for _, l := range p.Lines() {
		if m := violationRE.FindStringSubmatch(l); m != nil {
			out[m[1]]++
		}
	}
	return out
}

// A production-mode site as the README sets it up (hub in operator mode
// with TLS, `alpha site add`, a leaf with the bundle, two nodes' agents
// with their own keys and signed blueprints, default telemetry) runs for
// ten minutes with a signed blueprint change every minute. Every grant a
// role lacks shows up as a permission violation in the hub's or the leaf's
// log (nats-server logs them at error level, so at ALPHA_LOG=info): the
// test counts them, and the agents' own reports of them, and fails on any.
func TestProductionSiteRun(t *testing.T) {
	d := productionRunFor(t)
	f := newFleet(t, 1)
	s := f.addSite(SiteSpec{ID: "prod", Nodes: []string{"n1", "n2"}})
	ctx := bg(t, d+5*time.Minute)

	gen := 0
	update := func() {
		gen++
		revs := map[string]uint64{}
		for _, n := range s.Nodes {
			rev, err := Put(ctx, f.js, s.ID+"."+n, Blueprint(gen, 3), f.signer())
			check.NoError(t, err)
			revs[n] = rev
		}
		check.For(t, 60*time.Second, 100*time.Millisecond, func() error {
			for _, n := range s.Nodes {
				if g := AppliedGen(s.Roots[n], 2); g != gen {
					return fmt.Errorf("%s.%s runs generation %d, want %d", s.ID, n, g, gen)
				}
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				ns, err := Status(sctx, f.js, s.ID+"."+n)
				cancel()
				if err != nil {
					return fmt.Errorf("%s.%s status at hub: %w", s.ID, n, err)
				}
				if ns.AppliedRevision != revs[n] {
					return fmt.Errorf("%s.%s: hub sees applied revision %d (%s), want %d", s.ID, n, ns.AppliedRevision, ns.Phase, revs[n])
				}
			}
			return nil
		})
	}
	update()
	start := time.Now()
	t.Logf("site %s with nodes %v converged in production mode; running for %v", s.ID, s.Nodes, d)
	for time.Since(start) < d {
		// The run's length is the scenario, not a wait for a condition.
		time.Sleep(min(time.Minute, d-time.Since(start)))
		for _, p := range append([]*Proc{f.hubs[0].Proc, s.Leaf}, s.Agents["n1"], s.Agents["n2"]) {
			if !p.Running() {
				t.Fatalf("%s exited during the run; log %s:\n%s", p.Name, p.log, p.tail())
			}
		}
		update()
	}
	// Default telemetry of both nodes reached the hub.
	for _, n := range s.Nodes {
		got, err := hubMessages(ctx, f.js, "telemetry."+s.ID+"."+n+".>")
		check.NoError(t, err)
		if got == 0 {
			t.Errorf("no telemetry of %s.%s at the hub after %v", s.ID, n, d)
		}
		t.Logf("telemetry of %s.%s at the hub: %d messages", s.ID, n, got)
	}
	t.Logf("%d signed blueprint generations applied and reported on both nodes", gen)

	// The servers' lines are the count; an agent's own report of the same
	// denial (nats.go's async error) is listed but not counted twice.
	servers, clients := 0, 0
	for _, p := range []*Proc{f.hubs[0].Proc, s.Leaf, s.Agents["n1"], s.Agents["n2"]} {
		v := violations(p)
		for _, subj := range slices.Sorted(maps.Keys(v)) {
			t.Errorf("%s: %d permission violations on %q", p.Name, v[subj], subj)
			if p == f.hubs[0].Proc || p == s.Leaf {
				servers += v[subj]
			} else {
				clients += v[subj]
			}
		}
	}
	if servers+clients > 0 {
		t.Errorf("%d permission violations in the hub's and the leaf's logs over %v of a production site (the agents reported %d); logs in %s",
			servers, d, clients, f.dir)
	} else {
		t.Logf("0 permission violations in the hub's, the leaf's and the agents' logs over %v", d)
	}
}

// hubMessages is how many messages the hub's TELEMETRY stream holds on
// subject filter.
func hubMessages(ctx context.Context, js jetstream.JetStream, filter string) (uint64, error) {
	st, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}
