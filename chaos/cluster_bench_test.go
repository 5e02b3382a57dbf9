package chaos

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// BenchmarkClusterFailover is the time from a blueprint put at a surviving
// member of a three-member hub cluster, right after the member holding the
// site's link was SIGKILLed, to the change on the node's disk. The killed
// member is restarted (and the cluster let settle) between samples, so each
// sample starts from a whole cluster with the site linked to some member.
func BenchmarkClusterFailover(b *testing.B) {
	const samples = 8
	f, s, ctx := benchSite(b, 3, "fo")
	// One client per member, so a put goes through a survivor and does not
	// wait for the benchmark's own client to fail over.
	members := make([]jetstream.KeyValue, len(f.hubs))
	for i, h := range f.hubs {
		js, err := jetstream.NewWithDomain(Conn(b, h.ClientURL, h.ConnOptions()...), streams.HubDomain)
		check.NoError(b, err)
		members[i], err = js.KeyValue(ctx, streams.BlueprintsBucket)
		check.NoError(b, err)
	}
	site := f.siteJS(s)
	report(b, "idleCpu%", clusterIdleCPU(b, f.hubs, 20*time.Second))
	var took, puts []float64
	for gen := 2; gen < 2+samples; gen++ {
		victim := linkedMember(b, s)
		survivor := (victim + 1) % len(f.hubs)
		leaders := groupLeaders(ctx, f.js, s.ID)
		f.hubs[victim].Kill()
		start := time.Now()
		rev, err := PutKV(ctx, members[survivor], s.Key(), Blueprint(gen, 1), f.signer(), 500*time.Millisecond)
		f.remember(s, gen, 1, rev, err)
		put := time.Since(start)
		mirrored, applied := waitApplied(b, ctx, site, s, gen, f.want[s.Key()].rev, start, time.Minute)
		took = append(took, ms(applied))
		puts = append(puts, ms(put))
		b.Logf("killed %s (leaders before: %s): put %v, in the site's mirror %v, applied %v after the put began",
			f.hubs[victim].Name, leaders, put.Round(time.Millisecond), mirrored.Round(time.Millisecond), applied.Round(time.Millisecond))
		f.hubs[victim].Restart()
		f.hubs[victim].WaitReady(90 * time.Second)
		waitCurrent(b, ctx, f.js, s.ID)
	}
	report(b, "ms", took)
	report(b, "putMs", puts)
}

// BenchmarkCatchUpSiteRestarted is the time from the end of an outage to
// the blueprint put during it applied on the node, when the site's `alpha
// site` process was restarted during the outage: the uplink is cut, a
// revision put at the hub, the site restarted, and the link restored 15 s
// or more after the restart (the restarted leaf's mirror has never reached
// the hub since it started).
func BenchmarkCatchUpSiteRestarted(b *testing.B) {
	const samples = 5
	f, s, ctx := benchSite(b, 1, "rs")
	site := f.siteJS(s)
	var took []float64
	for i := range samples {
		gen := 2 + i
		s.SetLinks(Cut)
		f.put(ctx, s, gen, 1)
		s.Leaf.Restart()
		s.Leaf.WaitLog("leaf ready", 60*time.Second)
		// The outage after the restart is the thing measured around. Its
		// length varies (15 to 35 s) so the restores fall at different
		// points of the restarted mirror's retry schedule: one falls
		// while a setup request sent into the cut is still awaited.
		offline := 15*time.Second + time.Duration(i)*5*time.Second
		time.Sleep(offline)
		restored := time.Now()
		s.SetLinks(Up)
		mirrored, applied := waitApplied(b, ctx, site, s, gen, f.want[s.Key()].rev, restored, 2*time.Minute)
		took = append(took, ms(applied))
		b.Logf("restarted, then offline %v: in the site's mirror %v, applied %v after restore", offline,
			mirrored.Round(time.Millisecond), applied.Round(time.Millisecond))
	}
	report(b, "ms", took)
}

// benchSite starts a fleet of members hub members (production mode) with
// one `alpha site` behind proxies, converged on generation 1.
func benchSite(b *testing.B, members int, id string) (*fleet, *Site, context.Context) {
	b.Helper()
	f := newFleet(b, members)
	s := f.addSite(SiteSpec{ID: id, OneProcess: true})
	ctx := bg(b, 15*time.Minute)
	f.put(ctx, s, 1, 1)
	f.waitConverged(90 * time.Second)
	return f, s, ctx
}

// waitApplied polls the site's mirror and the node's files until the node
// runs generation gen and returns how long after from the mirror held
// revision rev and the files had gen. The mirror is read for the log only:
// it tells which of the two is slow.
func waitApplied(b *testing.B, ctx context.Context, site jetstream.JetStream, s *Site, gen int, rev uint64, from time.Time, limit time.Duration) (mirrored, applied time.Duration) {
	b.Helper()
	for {
		if mirrored == 0 && mirrorRevision(ctx, site) >= rev {
			mirrored = time.Since(from)
		}
		if AppliedGen(s.Root, 0) == gen {
			applied = time.Since(from)
			if mirrored == 0 {
				mirrored = applied
			}
			return mirrored, applied
		}
		if time.Since(from) > limit {
			b.Fatalf("generation %d not applied %v after %v (mirror: %v)", gen, limit, from.Format(time.TimeOnly), mirrored)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// mirrorRevision is the last sequence of the site's blueprints mirror (0
// when the leaf does not answer).
func mirrorRevision(ctx context.Context, site jetstream.JetStream) uint64 {
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	st, err := site.Stream(ctx, streams.Store{Bucket: streams.BlueprintsBucket}.Stream())
	if err != nil {
		return 0
	}
	return st.CachedInfo().State.LastSeq
}

// linkedMember is the index of the member the site's leaf is linked to.
func linkedMember(b *testing.B, s *Site) int {
	b.Helper()
	victim := -1
	check.For(b, 30*time.Second, 20*time.Millisecond, func() error {
		victim = -1
		for i, p := range s.Links {
			if p.Conns() > 0 {
				if victim >= 0 {
					return fmt.Errorf("site %s linked to members %d and %d", s.ID, victim, i)
				}
				victim = i
			}
		}
		if victim < 0 {
			return fmt.Errorf("site %s has no open uplink", s.ID)
		}
		return nil
	})
	return victim
}

// groupLeaders names the leaders of the blueprints stream and of the
// site's mirror consumer on it, for the log.
func groupLeaders(ctx context.Context, js jetstream.JetStream, site string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st := streams.Store{Bucket: streams.BlueprintsBucket}
	str, err := js.Stream(ctx, st.Stream())
	if err != nil {
		return err.Error()
	}
	c, err := str.PushConsumer(ctx, streams.MirrorConsumerConfig(site, st).Durable)
	if err != nil {
		return err.Error()
	}
	sl, cl := "?", "?"
	if ci := str.CachedInfo().Cluster; ci != nil {
		sl = ci.Leader
	}
	if ci := c.CachedInfo().Cluster; ci != nil {
		cl = ci.Leader
	}
	return "stream " + sl + ", mirror consumer " + cl
}

// waitCurrent waits until every replica of the blueprints stream is
// current again and the site's mirror consumer (R1, hub/keeper.go) has a
// member: a member restarted a moment ago may still be catching up, and
// killing another then would cost quorum, which is not the failure measured.
func waitCurrent(b *testing.B, ctx context.Context, js jetstream.JetStream, site string) {
	b.Helper()
	st := streams.Store{Bucket: streams.BlueprintsBucket}
	check.For(b, 90*time.Second, 250*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		str, err := js.Stream(ctx, st.Stream())
		if err != nil {
			return err
		}
		c, err := str.PushConsumer(ctx, streams.MirrorConsumerConfig(site, st).Durable)
		if err != nil {
			return err
		}
		if ci := c.CachedInfo().Cluster; ci == nil || ci.Leader == "" {
			return errors.New("mirror consumer has no member")
		}
		for what, ci := range map[string]*jetstream.ClusterInfo{"stream": str.CachedInfo().Cluster} {
			if ci == nil || ci.Leader == "" {
				return fmt.Errorf("%s has no leader", what)
			}
			if len(ci.Replicas) != 2 {
				return fmt.Errorf("%s has %d peers besides its leader, want 2", what, len(ci.Replicas))
			}
			for _, r := range ci.Replicas {
				if !r.Current || r.Offline {
					return errors.New(what + " replica " + r.Name + " not current")
				}
			}
		}
		return nil
	})
}

// clusterIdleCPU samples the members' CPU, summed, in 5 s windows over d:
// what the cluster costs idle (raft heartbeats included).
func clusterIdleCPU(b *testing.B, hubs []*Hub, d time.Duration) []float64 {
	b.Helper()
	total := func() time.Duration {
		var sum time.Duration
		for _, h := range hubs {
			u, err := h.Usage()
			check.NoError(b, err)
			sum += u.CPU
		}
		return sum
	}
	var cpu []float64
	last, lastAt := total(), time.Now()
	for range int(d / (5 * time.Second)) {
		time.Sleep(5 * time.Second)
		now, at := total(), time.Now()
		cpu = append(cpu, 100*float64(now-last)/float64(at.Sub(lastAt)))
		last, lastAt = now, at
	}
	return cpu
}
