package scale_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
	"github.com/alpha-edge/alpha/streams"
)

// BenchmarkClusterScale runs ALPHA_SCALE_CLUSTER_SITES sites (default 150)
// against a three-member hub cluster of `alpha hub` processes, each site's
// uplink listing every member as `alpha site --hub` does, and measures:
//   - how the links spread over the members after start
//     (links-per-member-min/max), and the members' CPU with the fleet idle
//     (cluster-idle-cpu%, three summed, 10 s);
//   - that the tenant's buckets and streams at the hub are R3, and the
//     sites' consumers on them (fails the benchmark otherwise);
//   - the member holding the most links SIGKILLed: the time until every one
//     of its sites is linked to a survivor (relink-s), the most sites that
//     linked to the survivors within one second and within 100 ms
//     (relink-peak-per-s, relink-peak-per-100ms: the stampede), how
//     many sites changed member in all (a stampede would move sites that
//     were not on the victim too), and put → applied (applied-ms) of one
//     put per node through a survivor right after the kill;
//   - the member restarted: how many sites it holds 30 s later (sites stay
//     where they are: nothing moves them back), and put → applied once
//     more with the whole cluster (rejoined-applied-ms).
func BenchmarkClusterScale(b *testing.B) {
	n := envInt(b, "ALPHA_SCALE_CLUSTER_SITES", 150)
	binary(b) // chaos.Binary takes ALPHA_BIN
	dir := b.TempDir()
	prod := chaos.NewProd(b, dir)
	// The default limits fit about 150 sites (scale.Start says why); the
	// members' stores still bound them.
	check.NoError(b, prod.Op.SetTenant(chaos.Tenant, accounts.TenantLimits{Storage: -1, Memory: 64 << 20, Streams: -1, Consumers: -1}))
	hubs := chaos.StartHubClusterProd(b, dir, 3, prod)
	hub, ports := attachCluster(b, dir, prod, hubs)
	var leafLog io.Writer
	if path := os.Getenv("ALPHA_SCALE_LEAF_LOG"); path != "" {
		lf, err := os.Create(path)
		check.NoError(b, err)
		defer lf.Close()
		leafLog = lf // os.File writes are safe from many goroutines
	}
	f := scale.Start(b, scale.Options{Hub: hub, LeafLog: leafLog})
	start := time.Now()
	f.AddSites(n)
	report(b, "start-s", []float64{time.Since(start).Seconds()})
	b.ReportMetric(float64(n), "sites")

	per := linksPerMember(f, ports, len(hubs))
	b.Logf("links per member after start: %v", per)
	b.ReportMetric(float64(slices.Min(per)), "links-per-member-min")
	b.ReportMetric(float64(slices.Max(per)), "links-per-member-max")

	// What the members spend on an idle fleet. Each site's three mirror
	// consumers were R3 raft groups heartbeating every 500 ms (hub/tune.go),
	// 0.28% of a core per site; they are R1 now.
	cpu := membersCPU(b, hubs)
	time.Sleep(10 * time.Second)
	idle := 100 * float64(membersCPU(b, hubs)-cpu) / float64(10*time.Second)
	b.Logf("members' CPU with the fleet idle: %.1f%% of a core (three summed)", idle)
	b.ReportMetric(idle, "cluster-idle-cpu%")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	_, js := hub.Admin(scale.Tenant)
	checkR3(b, ctx, js)

	// A warm-up round through the whole cluster, not counted: the first
	// put after the fleet started meets mirrors still settling.
	if _, err := f.WaitApplied(ctx, f.PutAll(ctx, "warm-up")); err != nil {
		b.Fatal(err)
	}

	victim := slices.Index(per, slices.Max(per))
	survivor := (victim + 1) % len(hubs)
	// The put goes through a survivor on a connection made before the
	// kill, so it measures the cluster, not the client's failover.
	_, sjs, err := prod.Op.AdminJetStream(hubs[survivor].ClientURL, scale.Tenant, hub.TLS())
	check.NoError(b, err)
	kv, err := sjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(b, err)
	var moved []*scale.Site
	for _, s := range f.Sites {
		if memberOf(s, ports) == victim {
			moved = append(moved, s)
		}
	}
	// Whose mirror consumer the victim leads: those wait for an election.
	led := mirrorLeaders(b, ctx, js, f, hubs[victim].Name)
	b.Logf("killing %s with %d of %d sites, leading %d sites' blueprints mirror consumers (%s)",
		hubs[victim].Name, len(moved), n, len(led), groupLeaders(ctx, js))
	w := watchLinks(f, ports)
	hubs[victim].Kill()
	killed := time.Now()
	var puts []scale.Put
	var putMs []float64
	for _, nd := range f.Nodes() {
		at := time.Now()
		rev, err := chaos.PutKV(ctx, kv, nd.Key(), []byte("after the kill"), nil, 2*time.Second)
		check.NoError(b, err)
		putMs = append(putMs, float64(time.Since(at))/float64(time.Millisecond))
		puts = append(puts, scale.Put{Node: nd, Revision: rev, At: at})
	}
	putTook := time.Since(killed)
	applied, err := f.WaitApplied(ctx, puts)
	if err != nil {
		b.Fatal(err)
	}
	appliedAll := time.Since(killed)
	relinked := w.waitMoved(b, moved, victim, 3*time.Minute)
	changes := w.stop()
	relink := make([]float64, 0, len(relinked))
	for _, at := range relinked {
		relink = append(relink, at.Sub(killed).Seconds())
	}
	b.Logf("after the kill: puts took %v, all applied %v, relinked p50 %.2fs max %.2fs, member changes %d for %d sites moved; links %v",
		putTook.Round(time.Millisecond), appliedAll.Round(time.Millisecond), chaos.Percentile(slices.Sorted(slices.Values(relink)), 0.5),
		slices.Max(relink), changes, len(moved), linksPerMember(f, ports, len(hubs)))
	b.ReportMetric(float64(peakWithin(relinked, time.Second)), "relink-peak-per-s")
	// The sampling is every 50 ms: a tenth of a second tells a burst.
	b.ReportMetric(float64(peakWithin(relinked, 100*time.Millisecond)), "relink-peak-per-100ms")
	report(b, "relink-s", relink)
	b.ReportMetric(float64(changes), "member-changes")
	b.ReportMetric(float64(len(moved)), "sites-moved")
	b.ReportMetric(putTook.Seconds(), "puts-after-kill-s")
	b.ReportMetric(appliedAll.Seconds(), "kill-to-all-applied-s")
	report(b, "put-ms", putMs)
	report(b, "applied-ms", msOf(applied))
	// The sites that moved against those that stayed, and the moved ones
	// from their relink on: which of the two waits.
	isMoved := map[*scale.Site]time.Time{}
	for i, s := range moved {
		isMoved[s] = relinked[i]
	}
	var stayed, movers, afterLink, leaderLost, leaderKept []time.Duration
	for i, p := range puts {
		if led[p.Node.Site.ID] {
			leaderLost = append(leaderLost, applied[i])
		} else {
			leaderKept = append(leaderKept, applied[i])
		}
		at, ok := isMoved[p.Node.Site]
		if !ok {
			stayed = append(stayed, applied[i])
			continue
		}
		movers = append(movers, applied[i])
		// From the later of the put and the relink.
		afterLink = append(afterLink, p.At.Add(applied[i]).Sub(later(p.At, at)))
	}
	if len(stayed) > 0 {
		report(b, "applied-stayed-ms", msOf(stayed))
	}
	report(b, "applied-moved-ms", msOf(movers))
	report(b, "applied-after-relink-ms", msOf(afterLink))
	if len(leaderLost) > 0 {
		report(b, "applied-consumer-leader-lost-ms", msOf(leaderLost))
	}
	if len(leaderKept) > 0 {
		report(b, "applied-consumer-leader-kept-ms", msOf(leaderKept))
	}

	hubs[victim].Restart()
	hubs[victim].WaitReady(90 * time.Second)
	back := time.Now()
	// Nothing moves a linked site: the count shows whether any did.
	time.Sleep(30 * time.Second)
	per = linksPerMember(f, ports, len(hubs))
	b.Logf("links per member 30 s after %s rejoined: %v", hubs[victim].Name, per)
	b.ReportMetric(float64(per[victim]), "links-rejoined-member")
	puts = f.PutAll(ctx, "rejoined")
	rejoined, err := f.WaitApplied(ctx, puts)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("put round %v after the rejoin: applied max %v", time.Since(back).Round(time.Second), slices.Max(rejoined))
	report(b, "rejoined-applied-ms", msOf(rejoined))
}

// memberOf is the index of the member s's uplink is linked to (-1: none),
// found by the remote port of the leaf's solicited connection.
// attachCluster is a prodtest.Hub for the members' client and leafnode
// URLs, and which member each leafnode port is.
func attachCluster(t testing.TB, dir string, prod *chaos.Prod, hubs []*chaos.Hub) (*prodtest.Hub, map[int]int) {
	t.Helper()
	var clients, leafs []string
	ports := map[int]int{} // leafnode port → member index
	for i, h := range hubs {
		clients = append(clients, h.ClientURL)
		leafs = append(leafs, "nats-leaf://"+h.LeafAddr)
		_, port, _ := strings.Cut(h.LeafAddr, ":")
		p, err := strconv.Atoi(port)
		check.NoError(t, err)
		ports[p] = i
	}
	return prodtest.Attach(t, dir, prod.Op, prod.TLS, strings.Join(clients, ","), strings.Join(leafs, ",")), ports
}

func memberOf(s *scale.Site, ports map[int]int) int {
	lz, err := s.Leaf.Server.Leafz(nil)
	if err != nil {
		return -1
	}
	for _, l := range lz.Leafs {
		if m, ok := ports[l.Port]; ok {
			return m
		}
	}
	return -1
}

func linksPerMember(f *scale.Fleet, ports map[int]int, members int) []int {
	per := make([]int, members)
	for _, s := range f.Sites {
		if m := memberOf(s, ports); m >= 0 {
			per[m]++
		}
	}
	return per
}

// linkWatch samples every site's member every 50 ms from the kill on: when
// each site first linked to another member, and how many times any site
// changed member.
type linkWatch struct {
	mu      sync.Mutex
	first   map[*scale.Site]time.Time // first link to a member other than the one before
	changes int
	done    chan struct{}
	stopped chan struct{}
}

func watchLinks(f *scale.Fleet, ports map[int]int) *linkWatch {
	w := &linkWatch{first: map[*scale.Site]time.Time{}, done: make(chan struct{}), stopped: make(chan struct{})}
	last := map[*scale.Site]int{}
	for _, s := range f.Sites {
		last[s] = memberOf(s, ports)
	}
	go func() {
		defer close(w.stopped)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-t.C:
			}
			for _, s := range f.Sites {
				m := memberOf(s, ports)
				if m < 0 || m == last[s] {
					continue
				}
				now := time.Now()
				w.mu.Lock()
				w.changes++
				if _, ok := w.first[s]; !ok {
					w.first[s] = now
				}
				w.mu.Unlock()
				last[s] = m
			}
		}
	}()
	return w
}

// waitMoved waits until every site of sites linked to a member other than
// victim and returns when each did.
func (w *linkWatch) waitMoved(b *testing.B, sites []*scale.Site, victim int, total time.Duration) []time.Time {
	b.Helper()
	var out []time.Time
	check.For(b, total, 50*time.Millisecond, func() error {
		w.mu.Lock()
		defer w.mu.Unlock()
		out = out[:0]
		for _, s := range sites {
			at, ok := w.first[s]
			if !ok {
				return fmt.Errorf("site %s not linked to a survivor yet (%d of %d are)", s.ID, len(out), len(sites))
			}
			out = append(out, at)
		}
		return nil
	})
	return out
}

// stop ends the sampling and returns how many member changes it saw.
func (w *linkWatch) stop() int {
	close(w.done)
	<-w.stopped
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changes
}

// peakWithin is the most times within any one window.
func peakWithin(times []time.Time, window time.Duration) int {
	s := slices.SortedFunc(slices.Values(times), func(a, b time.Time) int { return a.Compare(b) })
	peak, lo := 0, 0
	for hi := range s {
		for s[hi].Sub(s[lo]) >= window {
			lo++
		}
		peak = max(peak, hi-lo+1)
	}
	return peak
}

// checkR3 fails the benchmark for any stream of the tenant at the hub, or
// durable consumer on it, with fewer than three replicas, configured or
// running: a cluster that loses a member must lose no store. The sites'
// mirror consumers are the exception, R1 by design (the hub's keeper makes
// a lost member's again): one that is not R1 fails it too.
func checkR3(b *testing.B, ctx context.Context, js jetstream.JetStream) {
	b.Helper()
	var bad []string
	streamsSeen, consumers, mirrors, ephemeral := 0, 0, 0, 0
	for name := range js.StreamNames(ctx).Name() {
		str, err := js.Stream(ctx, name)
		if err != nil {
			bad = append(bad, name+": "+err.Error())
			continue
		}
		streamsSeen++
		info := str.CachedInfo()
		if r := replicas(info.Config.Replicas, info.Cluster); r != 3 {
			bad = append(bad, fmt.Sprintf("stream %s: %d replicas", name, r))
		}
		cl := str.ListConsumers(ctx)
		for ci := range cl.Info() {
			if ci.Config.Durable == "" {
				// A watcher's ordered consumer: R1 by design, made
				// again by its client when its member goes.
				ephemeral++
				continue
			}
			want := ci.Config.Replicas
			if want == 0 {
				want = info.Config.Replicas
			}
			if strings.HasPrefix(ci.Name, streams.MirrorConsumer("")) {
				mirrors++
				if r := replicas(want, ci.Cluster); r != 1 || want != 1 {
					bad = append(bad, fmt.Sprintf("mirror consumer %s > %s: %d replicas, want 1", name, ci.Name, r))
				}
				continue
			}
			consumers++
			if r := replicas(want, ci.Cluster); r != 3 {
				bad = append(bad, fmt.Sprintf("consumer %s > %s: %d replicas", name, ci.Name, r))
			}
		}
		if err := cl.Err(); err != nil {
			bad = append(bad, name+" consumers: "+err.Error())
		}
	}
	b.Logf("replicas check: %d streams and %d other durable consumers R3, %d site mirror consumers R1 (%d ephemeral ones not counted)", streamsSeen, consumers, mirrors, ephemeral)
	b.ReportMetric(float64(len(bad)), "replicas-wrong")
	if len(bad) > 0 {
		b.Errorf("%d streams or consumers with the wrong replicas (or unreadable):\n%s", len(bad), strings.Join(bad[:min(len(bad), 30)], "\n"))
	}
}

// replicas is the lower of the configured replicas and the peers running
// (the leader and its followers).
func replicas(configured int, ci *jetstream.ClusterInfo) int {
	if ci == nil {
		return min(configured, 1)
	}
	return min(configured, 1+len(ci.Replicas))
}

// groupLeaders names the members leading the blueprints and status
// streams, for the log.
func groupLeaders(ctx context.Context, js jetstream.JetStream) string {
	var out []string
	for _, bucket := range []string{streams.BlueprintsBucket, streams.StatusBucket} {
		name := streams.Store{Bucket: bucket}.Stream()
		str, err := js.Stream(ctx, name)
		if err != nil || str.CachedInfo().Cluster == nil {
			out = append(out, name+" leader ?")
			continue
		}
		out = append(out, name+" leader "+str.CachedInfo().Cluster.Leader)
	}
	return strings.Join(out, ", ")
}

// mirrorLeaders are the sites whose blueprints mirror consumer at the hub
// member leads.
func mirrorLeaders(b *testing.B, ctx context.Context, js jetstream.JetStream, f *scale.Fleet, member string) map[string]bool {
	b.Helper()
	st := streams.Store{Bucket: streams.BlueprintsBucket}
	str, err := js.Stream(ctx, st.Stream())
	check.NoError(b, err)
	out := map[string]bool{}
	for _, s := range f.Sites {
		c, err := str.PushConsumer(ctx, streams.MirrorConsumerConfig(s.ID, st).Durable)
		check.NoError(b, err)
		if ci := c.CachedInfo().Cluster; ci != nil && ci.Leader == member {
			out[s.ID] = true
		}
	}
	return out
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// membersCPU is the CPU time the members used so far, summed.
func membersCPU(b *testing.B, hubs []*chaos.Hub) time.Duration {
	b.Helper()
	var sum time.Duration
	for _, h := range hubs {
		u, err := h.Usage()
		check.NoError(b, err)
		sum += u.CPU
	}
	return sum
}
