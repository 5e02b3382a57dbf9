package rollout_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/rollout"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// fleetDoc is a fleet of meters: every node writes its site's bucket and
// its own address; bad adds a health dependency nothing ever reports, so
// the node's own guard rolls it back.
func fleetDoc(gen string, bad bool, sites, nodes []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: alpha/v1
kind: Fleet
metadata:
  name: meters
spec:
  selector: role=meter
  rollout:
    batches: ["10%%", "50%%", "100%%"]
    minHealth: 1
    for: 1s
    deadline: 8s
  params:
    defaults: {gen: "%s"}
    sites:
`, gen)
	for _, s := range sites {
		fmt.Fprintf(&b, "      %s: {bucket: %s-data}\n", s, s)
	}
	b.WriteString("    nodes:\n")
	for _, k := range nodes {
		fmt.Fprintf(&b, "      %s: {ip: 10.0.%d.%d}\n", k, len(k), strings.Count(k, "n")+int(k[len(k)-1]-'0'))
	}
	b.WriteString(`  template: |
    apiVersion: alpha/v1
    kind: Blueprint
    metadata:
      name: meter
    spec:
      files:
        - path: /etc/meter.conf
          content: "gen={{ .Params.gen }} site={{ .Site }} node={{ .Node }} bucket={{ .Params.bucket }} ip={{ .Params.ip }}\n"
`)
	if bad {
		b.WriteString(`      telemetry:
        sensors:
          - name: never.reported
            min: 0
      health:
        dependsOn: ["sensor:never.reported"]
`)
	}
	return b.String()
}

type fleetEnv struct {
	t       *testing.T
	p       *prodtest.Hub
	js      jetstream.JetStream
	seed    []byte
	sites   []string
	keys    []string
	roots   map[string]string
	ips     map[string]string
	stopCtl func()
}

// newFleetEnv runs a production hub, sites×nodes agents behind their own
// site leaves (real leafnode links), labels every node role=meter, and runs
// the rollout controller.
func newFleetEnv(t *testing.T, sites, nodes int) *fleetEnv {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"t1"}})
	_, js := p.Admin("t1")
	seed, err := os.ReadFile(p.Op.PublisherSeed("t1"))
	check.NoError(t, err)
	e := &fleetEnv{t: t, p: p, js: js, seed: seed, roots: map[string]string{}}
	ctx := context.Background()
	for s := range sites {
		site := fmt.Sprintf("plant-%d", s)
		e.sites = append(e.sites, site)
		var ns []string
		for n := range nodes {
			ns = append(ns, fmt.Sprintf("n%d", n))
		}
		bundle := p.AddSite(site, "t1", nil, ns...)
		l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
		for _, n := range ns {
			key := streams.Key(site, n)
			e.keys = append(e.keys, key)
			e.roots[key] = t.TempDir()
			p.StartAgent(bundle, n, l.ClientURL(), prodtest.AgentOptions{Root: e.roots[key],
				Tune: func(c *agent.Config) { c.Resync = 2 * time.Second }})
			_, err := inventory.SetLabels(ctx, js, key, map[string]string{"role": "meter"}, nil)
			check.NoError(t, err)
		}
	}
	e.startController()
	return e
}

func (e *fleetEnv) startController() {
	ctx, cancel := context.WithCancel(context.Background())
	c := rollout.New(rollout.Config{JS: e.js, Log: stack.Log(), Tick: 200 * time.Millisecond,
		Reachable: func(site string) bool {
			lz, err := e.p.Hub.Server.Leafz(nil)
			if err != nil {
				return true
			}
			for _, l := range lz.Leafs {
				if l.Name == "leaf-"+site {
					return true
				}
			}
			return false
		}})
	var wg sync.WaitGroup
	wg.Go(func() { c.Run(ctx) })
	e.stopCtl = func() { cancel(); wg.Wait() }
	e.t.Cleanup(e.stopCtl)
}

// apply renders, signs and stages the fleet as `alpha fleet apply` does
// and starts its rollout.
func (e *fleetEnv) apply(doc string) fleet.Meta {
	e.t.Helper()
	ctx := context.Background()
	f, err := fleet.Parse([]byte(doc), ".")
	check.NoError(e.t, err)
	sel, err := inventory.ParseSelector(f.Spec.Selector)
	check.NoError(e.t, err)
	nodes, err := inventory.List(ctx, e.js, sel)
	check.NoError(e.t, err)
	meta, staged, err := f.Build(nodes, e.seed, time.Now())
	check.NoError(e.t, err)
	check.NoError(e.t, fleet.Stage(ctx, e.js, meta, staged))
	_, err = rollout.Start(ctx, e.js, "meters", time.Now())
	check.NoError(e.t, err)
	return meta
}

func (e *fleetEnv) want(key, gen string) string {
	site, node, _ := strings.Cut(key, ".")
	return fmt.Sprintf("gen=%s site=%s node=%s bucket=%s-data ip=%s\n", gen, site, node, site, e.ip(key))
}

func (e *fleetEnv) ip(key string) string {
	return fmt.Sprintf("10.0.%d.%d", len(key), strings.Count(key, "n")+int(key[len(key)-1]-'0'))
}

func (e *fleetEnv) file(key string) string {
	b, _ := os.ReadFile(filepath.Join(e.roots[key], "etc/meter.conf"))
	return string(b)
}

func (e *fleetEnv) load() *rollout.Rollout {
	r, _, err := rollout.Load(context.Background(), e.js, "meters")
	check.NoError(e.t, err)
	return r
}

func (e *fleetEnv) waitState(state string, timeout time.Duration) *rollout.Rollout {
	e.t.Helper()
	var r *rollout.Rollout
	check.For(e.t, timeout, 200*time.Millisecond, func() error {
		r = e.load()
		if r.State != state {
			return fmt.Errorf("rollout %s (batch %d of %d, %v): %s", r.State, r.Batch+1, len(r.Batches), r.Count(nil), r.Reason)
		}
		return nil
	})
	return r
}

// firstSeen records, per node, when its file first held content for which
// match is true, polling until stop.
func (e *fleetEnv) firstSeen(match func(key, content string) bool) (seen func() map[string]time.Time, stop func()) {
	var mu sync.Mutex
	out := map[string]time.Time{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, k := range e.keys {
				if c := e.file(k); match(k, c) {
					mu.Lock()
					if _, ok := out[k]; !ok {
						out[k] = time.Now()
					}
					mu.Unlock()
				}
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	var once sync.Once
	return func() map[string]time.Time {
			mu.Lock()
			defer mu.Unlock()
			cp := map[string]time.Time{}
			for k, v := range out {
				cp[k] = v
			}
			return cp
		}, func() {
			once.Do(func() { close(done); wg.Wait() })
		}
}

// 40 nodes over 8 sites: one fleet rolls out 10% → 50% → 100% behind a
// health gate, each node with its own parameters on disk, no node of a
// batch before the previous batch passed its gate. Then a bad revision
// stops at its first batch: those nodes roll back on their own and no
// node of a later batch ever applies it.
func TestFleetRolloutFortyNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("40 agents: not in -short")
	}
	e := newFleetEnv(t, 8, 5)
	seen, stop := e.firstSeen(func(k, c string) bool { return c == e.want(k, "1") })
	e.apply(fleetDoc("1", false, e.sites, e.keys))
	r := e.waitState(rollout.Completed, 3*time.Minute)
	stop()
	if got := fmt.Sprint(len(r.Batches[0]), len(r.Batches[1]), len(r.Batches[2])); got != "4 16 20" {
		t.Fatalf("batch sizes %s, want 4 16 20", got)
	}
	for _, k := range e.keys {
		if got, want := e.file(k), e.want(k, "1"); got != want {
			t.Errorf("%s: /etc/meter.conf = %q, want %q", k, got, want)
		}
		if n := r.Nodes[k]; n.Phase != rollout.NodeGood {
			t.Errorf("%s: %s (%s), want Good", k, n.Phase, n.Reason)
		}
	}
	at := seen()
	for b := 1; b < len(r.Batches); b++ {
		var lastPrev time.Time
		for _, k := range r.Batches[b-1] {
			if at[k].After(lastPrev) {
				lastPrev = at[k]
			}
		}
		for _, k := range r.Batches[b] {
			if !at[k].After(lastPrev) {
				t.Errorf("%s (batch %d) applied at %s, before batch %d's last node (%s)", k, b+1, at[k].Format(time.StampMilli), b, lastPrev.Format(time.StampMilli))
			}
		}
	}

	// The bad revision: no later-batch node may ever hold it.
	bad, stopBad := e.firstSeen(func(k, c string) bool { return strings.HasPrefix(c, "gen=2 ") })
	defer stopBad()
	e.apply(fleetDoc("2", true, e.sites, e.keys))
	r = e.waitState(rollout.Failed, 2*time.Minute)
	first := map[string]bool{}
	for _, k := range r.Batches[0] {
		first[k] = true
	}
	check.For(t, time.Minute, 200*time.Millisecond, func() error {
		for _, k := range r.Batches[0] {
			if got, want := e.file(k), e.want(k, "1"); got != want {
				return fmt.Errorf("%s: /etc/meter.conf = %q, want the last good %q", k, got, want)
			}
			ns, err := nodeStatus(e.js, k)
			if err != nil {
				return err
			}
			if ns.Phase != "RolledBack" || ns.RolledBack == nil || ns.RolledBack.Revision != r.Nodes[k].Revision {
				return fmt.Errorf("%s: phase %s, rolled back %+v, want RolledBack of revision %d", k, ns.Phase, ns.RolledBack, r.Nodes[k].Revision)
			}
		}
		return nil
	})
	r = e.load()
	for k, n := range r.Nodes {
		if !first[k] && n.Phase != rollout.NodeSkipped {
			t.Errorf("%s (batch %d): %s, want Skipped", k, n.Batch+1, n.Phase)
		}
	}
	stopBad()
	for k := range bad() {
		if !first[k] {
			t.Errorf("%s, outside the first batch, applied the bad revision", k)
		}
	}
	if len(bad()) == 0 {
		t.Errorf("no node of the first batch applied the bad revision: the test proves nothing")
	}
}

func nodeStatus(js jetstream.JetStream, key string) (streams.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return streams.NodeStatus{}, err
	}
	site, node, _ := strings.Cut(key, ".")
	return stack.NodeStatus(kv, site, node)
}
