package fleets

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/hub/rollout"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// rolloutEnv is a production hub and sites as separate `alpha` processes,
// driven with the real CLI as the README's "Fleets and rollouts" does.
type rolloutEnv struct {
	t     *testing.T
	dir   string
	hub   *chaos.Hub
	sites map[string]*chaos.Site
	js    jetstream.JetStream
}

// newRolloutEnv starts the hub and the sites; a site in siteLabels is
// added with `alpha site add --labels` (every node gets them).
func newRolloutEnv(t *testing.T, sites map[string][]string, siteLabels map[string]string) *rolloutEnv {
	dir := t.TempDir()
	e := &rolloutEnv{t: t, dir: dir, sites: map[string]*chaos.Site{}}
	e.hub = chaos.StartHub(t, dir, chaos.HubSpec{})
	for id, nodes := range sites {
		spec := chaos.SiteSpec{ID: id, Nodes: nodes}
		if l, ok := siteLabels[id]; ok {
			chaos.Run(t, append(chaos.AddSiteArgs(dir, []*chaos.Hub{e.hub}, id, nodes...), "--labels", l)...)
			spec.Bundle = filepath.Join(dir, id, "bundle")
		}
		e.sites[id] = chaos.StartSite(t, dir, []*chaos.Hub{e.hub}, spec)
	}
	nc := chaos.Conn(t, e.hub.ClientURL, e.hub.ConnOptions()...)
	var err error
	e.js, err = jetstream.NewWithDomain(nc, streams.HubDomain)
	check.NoError(t, err)
	return e
}

// cli runs `alpha ARGS --nats HUB --creds ADMIN --tls-ca CA`.
func (e *rolloutEnv) cli(args ...string) string {
	e.t.Helper()
	p := e.hub.Prod
	return chaos.Run(e.t, append(args, "--nats", e.hub.ClientURL, "--creds", p.AdminCreds(), "--tls-ca", p.TLS.CA)...)
}

// writeFleet writes the meters fleet (template in its own file) for gen.
func (e *rolloutEnv) writeFleet(gen, batches string, forGate time.Duration) string {
	e.t.Helper()
	tpl := `apiVersion: alpha/v1
kind: Blueprint
metadata:
  name: meter
spec:
  files:
    - path: /etc/meter.conf
      content: "gen={{ .Params.gen }} node={{ .Site }}.{{ .Node }} zone={{ .Labels.zone }}\n"
`
	doc := fmt.Sprintf(`apiVersion: alpha/v1
kind: Fleet
metadata:
  name: meters
spec:
  selector: role=meter
  templateFile: meter.tpl.yaml
  params:
    defaults: {gen: "%s"}
  rollout:
    batches: %s
    minHealth: 1
    for: %s
    deadline: 2m
    maxPerSite: 1
`, gen, batches, forGate)
	check.NoError(e.t, os.WriteFile(filepath.Join(e.dir, "meter.tpl.yaml"), []byte(tpl), 0o644))
	path := filepath.Join(e.dir, "fleet.yaml")
	check.NoError(e.t, os.WriteFile(path, []byte(doc), 0o644))
	return path
}

func (e *rolloutEnv) file(key string) string {
	site, node, _ := strings.Cut(key, ".")
	b, _ := os.ReadFile(filepath.Join(e.sites[site].Roots[node], "etc/meter.conf"))
	return string(b)
}

func (e *rolloutEnv) load() (*rollout.Rollout, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	r, _, err := rollout.Load(ctx, e.js, "meters")
	return r, err
}

func (e *rolloutEnv) wait(timeout time.Duration, cond func(r *rollout.Rollout) error) *rollout.Rollout {
	e.t.Helper()
	var r *rollout.Rollout
	check.For(e.t, timeout, 250*time.Millisecond, func() error {
		var err error
		if r, err = e.load(); err != nil {
			return err
		}
		return cond(r)
	})
	return r
}

func (e *rolloutEnv) label(zones map[string]string) {
	for key, zone := range zones {
		out := e.cli("node", "label", key, "role=meter", "zone="+zone)
		if !strings.Contains(out, "zone="+zone) {
			e.t.Fatalf("alpha node label %s: %q", key, out)
		}
	}
}

// A site cut off during a rollout is pending, never failed; the hub
// restarted mid-rollout resumes where it was (batches already done are
// not put again); the site converges when its link returns.
func TestRolloutOfflineSiteAndHubRestart(t *testing.T) {
	e := newRolloutEnv(t, map[string][]string{"a": {"n1", "n2"}, "b": {"n1"}, "c": {"n1"}}, nil)
	zones := map[string]string{"a.n1": "north", "a.n2": "north", "b.n1": "south", "c.n1": "east"}
	e.label(zones)
	if out := e.cli("nodes", "-l", "role=meter,zone=north"); !strings.Contains(out, "a.n1") || !strings.Contains(out, "a.n2") || strings.Contains(out, "b.n1") {
		t.Fatalf("alpha nodes -l zone=north:\n%s", out)
	}
	// Batches: a.n1 | a.n2 | b.n1 c.n1. Site c is cut off before it starts.
	e.sites["c"].SetLinks(chaos.Cut)
	path := e.writeFleet("1", `["1", "50%", "100%"]`, 4*time.Second)
	out := e.cli("fleet", "apply", "--key", e.hub.Prod.Op.PublisherSeed(chaos.Tenant), "--start", path)
	if !strings.Contains(out, "4 node(s) signed and staged in 3 batch(es)") {
		t.Fatalf("fleet apply:\n%s", out)
	}
	// Restart the hub once batch 2 is under way.
	r := e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if r.Batch < 1 || r.Nodes["a.n2"].Revision == 0 {
			return fmt.Errorf("batch %d, %v", r.Batch+1, r.Count(nil))
		}
		return nil
	})
	if r.State != rollout.Running {
		t.Fatalf("rollout %s before the restart: %s", r.State, r.Reason)
	}
	first := r.Nodes["a.n1"].Revision
	e.hub.Restart()
	r = e.wait(3*time.Minute, func(r *rollout.Rollout) error {
		if r.State != rollout.Completed {
			return fmt.Errorf("%s batch %d: %v", r.State, r.Batch+1, r.Count(nil))
		}
		return nil
	})
	if got := r.Nodes["a.n1"].Revision; got != first {
		t.Errorf("a.n1 was put again after the restart: revision %d, was %d", got, first)
	}
	if n := r.Nodes["c.n1"]; n.Phase != rollout.NodePending {
		t.Errorf("c.n1 (cut off) is %s (%s), want Pending", n.Phase, n.Reason)
	}
	for _, k := range []string{"a.n1", "a.n2", "b.n1"} {
		if got, want := e.file(k), "gen=1 node="+k+" zone="+zones[k]+"\n"; got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
		if r.Nodes[k].Phase != rollout.NodeGood {
			t.Errorf("%s: %s, want Good", k, r.Nodes[k].Phase)
		}
	}
	status := e.cli("rollout", "status", "meters")
	for _, want := range []string{"Completed", "c.n1 Pending", "3 good, 1 pending"} {
		if !strings.Contains(status, want) {
			t.Errorf("alpha rollout status lacks %q:\n%s", want, status)
		}
	}
	if e.file("c.n1") != "" {
		t.Fatalf("c.n1 applied while cut off: %q", e.file("c.n1"))
	}
	e.sites["c"].SetLinks(chaos.Up)
	e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if n := r.Nodes["c.n1"]; n.Phase != rollout.NodeGood {
			return fmt.Errorf("c.n1 %s: %s", n.Phase, n.Reason)
		}
		return nil
	})
	if got, want := e.file("c.n1"), "gen=1 node=c.n1 zone=east\n"; got != want {
		t.Errorf("c.n1 after the link returned: %q, want %q", got, want)
	}
}

// Someone with write access to the hub changes a staged blueprint: the
// node refuses it (the signature covers exactly what the publisher signed),
// the rollout stops at that node's batch, and no other node ever receives
// the revision.
func TestRolloutTamperedAtHubIsRefused(t *testing.T) {
	// b is labelled when it is added.
	e := newRolloutEnv(t, map[string][]string{"a": {"n1"}, "b": {"n1"}}, map[string]string{"b": "role=meter,zone=south"})
	e.label(map[string]string{"a.n1": "north"})
	path := e.writeFleet("1", `["1", "100%"]`, time.Second)
	e.cli("fleet", "apply", "--key", e.hub.Prod.Op.PublisherSeed(chaos.Tenant), "--start", path)
	e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if r.State != rollout.Completed {
			return fmt.Errorf("%s: %v", r.State, r.Count(nil))
		}
		return nil
	})
	bKey := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		kv, err := e.js.KeyValue(ctx, streams.BlueprintsBucket)
		check.NoError(t, err)
		en, err := kv.Get(ctx, "b.n1")
		check.NoError(t, err)
		return en.Revision()
	}
	before := bKey()

	// Generation 2, staged but not started; a.n1's staged envelope edited.
	path = e.writeFleet("2", `["1", "100%"]`, time.Second)
	e.cli("fleet", "apply", "--key", e.hub.Prod.Op.PublisherSeed(chaos.Tenant), path)
	ctx := context.Background()
	staged, err := e.js.KeyValue(ctx, streams.StagedBucket)
	check.NoError(t, err)
	en, err := staged.Get(ctx, fleet.StagedKey("meters", "a.n1"))
	check.NoError(t, err)
	var env sign.Envelope
	check.NoError(t, json.Unmarshal(en.Value(), &env))
	var p sign.Payload
	check.NoError(t, json.Unmarshal(env.Payload, &p))
	p.Blueprint = []byte(strings.Replace(string(p.Blueprint), "gen=2", "gen=666", 1))
	env.Payload, _ = json.Marshal(p)
	forged, _ := json.Marshal(env)
	_, err = staged.Put(ctx, fleet.StagedKey("meters", "a.n1"), forged)
	check.NoError(t, err)

	e.cli("rollout", "start", "meters")
	r := e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if r.State != rollout.Failed {
			return fmt.Errorf("%s: %v", r.State, r.Count(nil))
		}
		return nil
	})
	if !strings.Contains(r.Reason, "a.n1") || !strings.Contains(r.Reason, "signature") {
		t.Errorf("rollout failed for %q, want a.n1's signature refusal", r.Reason)
	}
	if got := e.file("a.n1"); got != "gen=1 node=a.n1 zone=north\n" {
		t.Errorf("a.n1 runs %q, want generation 1 still", got)
	}
	if n := r.Nodes["b.n1"]; n.Phase != rollout.NodeSkipped {
		t.Errorf("b.n1: %s, want Skipped", n.Phase)
	}
	if got := bKey(); got != before {
		t.Errorf("b.n1's key moved from revision %d to %d", before, got)
	}
	if got := e.file("b.n1"); got != "gen=1 node=b.n1 zone=south\n" {
		t.Errorf("b.n1 runs %q", got)
	}
}

// A node cut off after it started on a bad revision rolls back on its own
// while still offline; its batch waits for its verdict, so the revision
// never reaches the next batch, and the rollout fails once the verdict
// arrives with the link.
func TestRolloutBadRevisionRollsBackOffline(t *testing.T) {
	e := newRolloutEnv(t, map[string][]string{"a": {"n1"}, "b": {"n1"}}, nil)
	e.label(map[string]string{"a.n1": "north", "b.n1": "south"})
	key := e.hub.Prod.Op.PublisherSeed(chaos.Tenant)
	e.cli("fleet", "apply", "--key", key, "--start", e.writeFleet("1", `["1", "100%"]`, time.Second))
	e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if r.State != rollout.Completed {
			return fmt.Errorf("%s: %v", r.State, r.Count(nil))
		}
		return nil
	})
	// Generation 2 depends on a sensor nothing reports: health 0.
	path := e.writeFleet("2", `["1", "100%"]`, time.Second)
	tpl, err := os.ReadFile(filepath.Join(e.dir, "meter.tpl.yaml"))
	check.NoError(t, err)
	tpl = append(tpl, []byte("  telemetry:\n    sensors:\n      - name: never.reported\n        min: 0\n  health:\n    dependsOn: [\"sensor:never.reported\"]\n")...)
	check.NoError(t, os.WriteFile(filepath.Join(e.dir, "meter.tpl.yaml"), tpl, 0o644))
	doc, err := os.ReadFile(path)
	check.NoError(t, err)
	check.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(doc), "deadline: 2m", "deadline: 12s", 1)), 0o644))
	e.cli("fleet", "apply", "--key", key, "--start", path)

	check.For(t, time.Minute, 50*time.Millisecond, func() error {
		if got := e.file("a.n1"); !strings.HasPrefix(got, "gen=2 ") {
			return fmt.Errorf("a.n1 runs %q", got)
		}
		return nil
	})
	e.sites["a"].SetLinks(chaos.Cut)
	// Back to generation 1 with no link: the node's own guard.
	check.For(t, time.Minute, 100*time.Millisecond, func() error {
		if got, want := e.file("a.n1"), "gen=1 node=a.n1 zone=north\n"; got != want {
			return fmt.Errorf("a.n1 runs %q, want %q", got, want)
		}
		return nil
	})
	// Past the link grace a.n1 is pending, and its batch still waits.
	r := e.wait(time.Minute, func(r *rollout.Rollout) error {
		if n := r.Nodes["a.n1"]; n.Phase != rollout.NodePending {
			return fmt.Errorf("a.n1 %s: %s", n.Phase, n.Reason)
		}
		return nil
	})
	if r.State != rollout.Running || r.Nodes["b.n1"].Phase != rollout.NodeWaiting {
		t.Fatalf("with a.n1's verdict unknown the rollout is %s and b.n1 %s", r.State, r.Nodes["b.n1"].Phase)
	}
	e.sites["a"].SetLinks(chaos.Up)
	r = e.wait(2*time.Minute, func(r *rollout.Rollout) error {
		if r.State != rollout.Failed {
			return fmt.Errorf("%s: %v", r.State, r.Count(nil))
		}
		return nil
	})
	if !strings.Contains(r.Reason, "rolled back") {
		t.Errorf("rollout failed for %q, want a.n1's rollback", r.Reason)
	}
	if n := r.Nodes["b.n1"]; n.Phase != rollout.NodeSkipped {
		t.Errorf("b.n1: %s, want Skipped", n.Phase)
	}
	if got := e.file("b.n1"); got != "gen=1 node=b.n1 zone=south\n" {
		t.Errorf("b.n1 runs %q", got)
	}
}
