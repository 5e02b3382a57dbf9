// Package scale runs a fleet of many sites in one test process for
// benchmarks: a production hub (prodtest: operator mode, TLS), and per site
// a genuine leaf started from its bundle, with its own store, its own
// leafnode connection, the mirrors and uplink sources leaf.Leaf sets up,
// and a lightweight agent per node that acknowledges blueprints and reports
// status and a little telemetry, without drivers.
package scale

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// Tenant is the fleet's tenant.
const Tenant = "acme"

// Options shape a fleet.
type Options struct {
	Sites int // how many sites
	Nodes int // nodes per site (0: 1)
	// Telemetry is how often each node publishes its few metrics (0:
	// the agent's default collector interval, 15 s; negative: never).
	Telemetry time.Duration
	// Compression of every uplink (leaf.Config.Compression; "": the
	// default).
	Compression string
	// Parallel is how many sites start at once (0: 2 per core), Batch how
	// many before waiting for their uplinks (0: 50).
	Parallel, Batch int
	// Hub, if set, is the hub to use; otherwise Start makes one
	// (prodtest.Start with the tenant Tenant).
	Hub *prodtest.Hub
	// Binary, if set, runs the hub Start makes as an `alpha hub` child
	// process (prodtest.Options.Binary) with HubEnv, so HubUsage measures
	// the hub alone.
	Binary string
	HubEnv []string
	// HubLog, if set, receives the hub's log; LeafLog every leaf's.
	HubLog, LeafLog io.Writer
	// Ping is how often the hub and each leaf check a link is alive
	// (`--ping` of `alpha hub` and `alpha site`); 0: 10 s, negative: their
	// defaults (2 s). The harness's leaves share one process and the
	// machine's cores: at 1,000 sites the hub used 17% of a core while
	// links were dropped as stale by the hundreds, by the leaves (hub
	// silent past 4 s) and by the hub (a leaf silent past 6 s, its writes
	// to it blocked for 10 s), because the leaf process was starved; each
	// drop a new TLS handshake and mirror setup that starved it further. A
	// leaf on its own box is not starved by 999 others; a fleet on links
	// that stall runs with the same setting.
	Ping time.Duration
	// HubArgs are more `alpha hub` flags for the hub Start makes.
	HubArgs []string
}

// Fleet is a running hub with its sites.
type Fleet struct {
	T     testing.TB
	Hub   *prodtest.Hub
	Sites []*Site
	opts  Options
	bp    jetstream.KeyValue // the hub's blueprints
}

// Site is one site: its leaf and its nodes' agents.
type Site struct {
	ID     string
	Bundle string
	Leaf   *leaf.Leaf
	Nodes  []*Node
	stop   func()
}

// Start makes a hub (unless o.Hub) and starts o.Sites sites, each with
// o.Nodes agents; it returns once every leaf's uplink is connected.
func Start(t testing.TB, o Options) *Fleet {
	t.Helper()
	if o.Nodes <= 0 {
		o.Nodes = 1
	}
	if o.Parallel <= 0 {
		o.Parallel = 2 * runtime.NumCPU()
	}
	if o.Batch <= 0 {
		o.Batch = 50
	}
	if o.Ping == 0 {
		o.Ping = 10 * time.Second
	}
	hubArgs := o.HubArgs
	if o.Ping > 0 {
		hubArgs = append([]string{"--ping", o.Ping.String()}, hubArgs...)
	}
	if o.Telemetry == 0 {
		o.Telemetry = 15 * time.Second // agent/telemetry.DefaultInterval
	}
	if o.Hub == nil {
		o.Hub = prodtest.Start(t, prodtest.Options{Tenants: []string{Tenant}, Binary: o.Binary, Env: o.HubEnv, Args: hubArgs, Log: o.HubLog,
			// The default limits fit about 150 sites (DefaultTenantLimits);
			// the hub's own store (75% of the free disk) still bounds them.
			Limits: accounts.TenantLimits{Storage: -1, Memory: 64 << 20, Streams: -1, Consumers: -1}})
	}
	f := &Fleet{T: t, Hub: o.Hub, opts: o}
	_, js := f.Hub.Admin(Tenant)
	var err error
	f.bp, err = js.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(t, err)
	f.AddSites(o.Sites)
	return f
}

// AddSites issues, registers and starts n more sites, Batch at a time:
// each batch's leaves connect before the next starts. A whole fleet
// connecting at once is the reconnect storm (BenchmarkReconnectStorm); at
// start it only makes the fleet slower to come up.
func (f *Fleet) AddSites(n int) {
	f.T.Helper()
	var ids, nodes []string
	for i := range f.opts.Nodes {
		nodes = append(nodes, fmt.Sprintf("n%d", i+1))
	}
	first := len(f.Sites)
	for i := range n {
		ids = append(ids, fmt.Sprintf("s%04d", first+i))
	}
	bundles := f.Hub.AddSites(ids, Tenant, nil, nodes...)
	for lo := 0; lo < n; lo += f.opts.Batch {
		hi := min(n, lo+f.opts.Batch)
		sites := make([]*Site, hi-lo)
		work := make(chan int)
		var wg sync.WaitGroup
		for range min(f.opts.Parallel, len(sites)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					sites[i-lo] = f.startSite(ids[i], bundles[i], nodes)
				}
			}()
		}
		for i := lo; i < hi; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		f.Sites = append(f.Sites, sites...)
		f.WaitConnected(time.Duration(len(sites))*100*time.Millisecond + time.Minute)
	}
}

// startSite runs on a worker goroutine: a failure is reported with Errorf
// and the site left nil, which WaitConnected then fails on.
func (f *Fleet) startSite(id, bundle string, nodes []string) *Site {
	l, stop := f.Hub.StartLeaf(bundle, prodtest.LeafOptions{Compression: f.opts.Compression, Log: f.opts.LeafLog,
		PingInterval: max(f.opts.Ping, 0)})
	s := &Site{ID: id, Bundle: bundle, Leaf: l, stop: stop}
	for _, n := range nodes {
		s.Nodes = append(s.Nodes, startNode(f.T, f.Hub, s, n, f.opts.Telemetry))
	}
	return s
}

// WaitConnected waits until every leaf's uplink is up.
func (f *Fleet) WaitConnected(total time.Duration) {
	f.T.Helper()
	check.For(f.T, total, 100*time.Millisecond, func() error {
		down := 0
		for _, s := range f.Sites {
			if s == nil {
				return fmt.Errorf("a site failed to start")
			}
			if !s.Leaf.Connected() {
				down++
			}
		}
		if down > 0 {
			return fmt.Errorf("%d of %d leaves not connected", down, len(f.Sites))
		}
		return nil
	})
}

// Nodes are every node of the fleet.
func (f *Fleet) Nodes() []*Node {
	var out []*Node
	for _, s := range f.Sites {
		out = append(out, s.Nodes...)
	}
	return out
}

// Put is one blueprint put at the hub.
type Put struct {
	Node     *Node
	Revision uint64
	At       time.Time // just before the put was sent
}

// PutAll puts a new blueprint for every node at the hub, one after the
// other as a publisher would, and returns the puts.
func (f *Fleet) PutAll(ctx context.Context, payload string) []Put {
	f.T.Helper()
	puts, err := f.TryPutAll(ctx, payload)
	check.NoError(f.T, err)
	return puts
}

// TryPutAll is PutAll that returns the first put's error: a hub busy
// taking its fleet back may not take puts in time, which a benchmark
// reports rather than fails on.
func (f *Fleet) TryPutAll(ctx context.Context, payload string) ([]Put, error) {
	var puts []Put
	for _, n := range f.Nodes() {
		at := time.Now()
		rev, err := f.bp.Put(ctx, n.Key(), []byte(payload))
		if err != nil {
			return puts, fmt.Errorf("put %s (%d of %d put): %w", n.Key(), len(puts), len(f.Nodes()), err)
		}
		puts = append(puts, Put{Node: n, Revision: rev, At: at})
	}
	return puts, nil
}

// WaitApplied waits until every put's node applied its revision (or a
// later one) and returns put → applied of each, in the order of puts.
func (f *Fleet) WaitApplied(ctx context.Context, puts []Put) ([]time.Duration, error) {
	out := make([]time.Duration, len(puts))
	left := len(puts)
	done := make([]bool, len(puts))
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for left > 0 {
		for i, p := range puts {
			if done[i] {
				continue
			}
			if at, ok := p.Node.AppliedAt(p.Revision); ok {
				out[i] = at.Sub(p.At)
				done[i] = true
				left--
			}
		}
		if left == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("%d of %d puts not applied: %w", left, len(puts), ctx.Err())
		case <-t.C:
		}
	}
	return out, nil
}

// WaitStatus waits until the hub's status bucket shows every put's node
// with its revision applied (and good), and returns put → status at the
// hub of each: the whole loop an operator or a rollout sees.
func (f *Fleet) WaitStatus(ctx context.Context, puts []Put) ([]time.Duration, error) {
	_, js := f.Hub.Admin(Tenant)
	kv, err := js.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return nil, fmt.Errorf("hub status bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, err
	}
	defer w.Stop()
	idx := map[string]int{}
	for i, p := range puts {
		idx[p.Node.Key()] = i
	}
	out := make([]time.Duration, len(puts))
	left := len(puts)
	// Keys already up to date before the watch started.
	for i, p := range puts {
		if st, err := hubStatus(ctx, kv, p.Node.Key()); err == nil && st.GoodRevision >= p.Revision {
			out[i] = time.Since(p.At)
			delete(idx, p.Node.Key())
			left--
		}
	}
	for left > 0 {
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("%d of %d nodes not reported at the hub: %w", left, len(puts), ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				continue
			}
			i, ok := idx[e.Key()]
			if !ok {
				continue
			}
			st, err := decodeStatus(e.Value())
			if err != nil || st.GoodRevision < puts[i].Revision {
				continue
			}
			out[i] = time.Since(puts[i].At)
			delete(idx, e.Key())
			left--
		}
	}
	return out, nil
}

// HubPID is the hub process's id (chaos.ProcUsage measures it); the hub
// must be a child process (Options.Binary).
func (f *Fleet) HubPID() (int, error) {
	if f.Hub.Proc == nil {
		return 0, fmt.Errorf("scale: the hub runs in this process; set Options.Binary to measure it alone")
	}
	return f.Hub.Proc.PID(), nil
}
