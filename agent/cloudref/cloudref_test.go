package cloudref

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

const doc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: t}
spec:
  cloud:
    - name: logs
      main: 'resource "terraform_data" "b" {}'
      outputs: [bucket_name]
  files:
    - path: /etc/plain.conf
      content: "no references here"
    - path: /etc/logs.conf
      content: "bucket=${cloud.logs.bucket_name}"
  containers:
    - name: web
      image: localhost/web:1
      env: {LOG_BUCKET: "${cloud.logs.bucket_name}", OTHER: "${HOME}"}
`

// containers is a stand-in container driver that remembers the env it ran
// each container with; the engine drives it like any other.
type containers struct {
	mu      sync.Mutex
	running map[string]string // name -> LOG_BUCKET
}

func (d *containers) Name() string { return "containers" }

func (d *containers) Plan(_ context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	want := map[string]string{}
	for _, c := range bp.Spec.Containers {
		want[c.Name] = c.Env["LOG_BUCKET"]
	}
	var p driver.Plan
	for name, v := range want {
		if got, ok := d.running[name]; !ok || got != v {
			p = append(p, driver.NewChange("container:"+name, driver.Update, v, func(context.Context) error {
				d.mu.Lock()
				d.running[name] = v
				d.mu.Unlock()
				return nil
			}))
		}
	}
	for name := range d.running {
		if _, ok := want[name]; !ok {
			p = append(p, driver.NewChange("container:"+name, driver.Delete, "", func(context.Context) error {
				d.mu.Lock()
				delete(d.running, name)
				d.mu.Unlock()
				return nil
			}))
		}
	}
	return p, nil
}

func (d *containers) env(name string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.running[name]
	return v, ok
}

// The engine resolves references through Prepare, is woken by new outputs,
// updates the workload when they change, and reports dependents when they go.
func TestEngineFollowsOutputs(t *testing.T) {
	bp, err := blueprint.Parse([]byte(doc))
	check.NoError(t, err)
	src := &Static{}
	res := New(src, nil)
	ctrs := &containers{running: map[string]string{}}
	var mu sync.Mutex
	var last engine.Status
	eng, err := engine.New(engine.Config{
		Drivers:  []driver.Driver{res, ctrs},
		StateDir: t.TempDir(),
		Resync:   time.Hour, // only the Watch may wake it
		Prepare:  res.Prepare,
		OnStatus: func(s engine.Status) { mu.Lock(); last = s; mu.Unlock() },
	})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = eng.Run(ctx) }()
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})

	resource := func(id string) driver.Resource {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range last.Resources {
			if r.ID == id {
				return r
			}
		}
		return driver.Resource{}
	}
	waitResource := func(id, state, msg string) {
		t.Helper()
		check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
			r := resource(id)
			if r.State != state || !strings.Contains(r.Message, msg) {
				return fmt.Errorf("%s is %s %q, want %s %q", id, r.State, r.Message, state, msg)
			}
			return nil
		})
	}

	// Not provisioned yet: the container waits, the rest applies.
	waitResource("cloud:logs", "pending", "not provisioned yet")
	waitResource("container:web", "pending", `spec.containers[0].env.LOG_BUCKET: needs ${cloud.logs.bucket_name}: configuration "logs" is not provisioned yet`)
	waitResource("file:/etc/logs.conf", "pending", "not provisioned yet")
	if _, ok := ctrs.env("web"); ok {
		t.Fatal("container started with an unresolved reference")
	}

	// Provisioned: the engine wakes and the container gets the value.
	digest := bp.Spec.Cloud[0].Digest()
	applied := func(v string) *streams.CloudStatus {
		return &streams.CloudStatus{Phase: streams.CloudApplied, Digest: digest, AppliedDigest: digest, Outputs: map[string]string{"bucket_name": v}}
	}
	src.Set("logs", applied("alpha-a"))
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v, _ := ctrs.env("web"); v != "alpha-a" {
			return fmt.Errorf("LOG_BUCKET %q", v)
		}
		return nil
	})
	waitResource("cloud:logs", "ok", "outputs: bucket_name")

	// New outputs: the workload follows.
	src.Set("logs", applied("alpha-b"))
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v, _ := ctrs.env("web"); v != "alpha-b" {
			return fmt.Errorf("LOG_BUCKET %q", v)
		}
		return nil
	})

	// Destroyed at the hub while this node still runs the revision that
	// needs it: the dependents are reported and not run with a literal.
	src.Set("logs", &streams.CloudStatus{Phase: streams.CloudDestroyed, Digest: digest})
	waitResource("container:web", "failed", `configuration "logs" was destroyed; its outputs are gone`)
	waitResource("file:/etc/logs.conf", "failed", "was destroyed")
	waitResource("cloud:logs", "failed", "destroyed by the hub")
	if _, ok := ctrs.env("web"); ok {
		t.Fatal("container kept without its cloud output")
	}
}

func TestPrepareLeavesOthersAlone(t *testing.T) {
	bp, err := blueprint.Parse([]byte(doc))
	check.NoError(t, err)
	src := &Static{}
	src.Set("logs", &streams.CloudStatus{Phase: streams.CloudApplying, Digest: "x"})
	out, err := New(src, nil).Prepare(context.Background(), bp)
	check.NoError(t, err)
	if len(out.Spec.Files) != 1 || out.Spec.Files[0].Path != "/etc/plain.conf" || len(out.Spec.Containers) != 0 {
		t.Fatalf("prepared %+v", out.Spec)
	}
	if len(bp.Spec.Files) != 2 || len(bp.Spec.Containers) != 1 {
		t.Fatal("Prepare changed the engine's blueprint")
	}

	// A blueprint without references comes back as it is.
	plain := blueprint.Empty()
	got, err := New(src, nil).Prepare(context.Background(), plain)
	check.NoError(t, err)
	if got != plain {
		t.Fatal("a blueprint without references was copied")
	}
}

// Stale outputs (the hub has not applied this revision yet) still resolve,
// so a variable change does not stop the workload; the configuration is
// reported pending until the hub catches up.
func TestStaleOutputsResolvePending(t *testing.T) {
	bp, err := blueprint.Parse([]byte(doc))
	check.NoError(t, err)
	src := &Static{}
	src.Set("logs", &streams.CloudStatus{Phase: streams.CloudApplying, Digest: "new", AppliedDigest: "old", Outputs: map[string]string{"bucket_name": "alpha-old"}})
	r := New(src, nil)
	out, err := r.Prepare(context.Background(), bp)
	check.NoError(t, err)
	check.Equal(t, out.Spec.Containers[0].Env["LOG_BUCKET"], "alpha-old")
	check.Equal(t, out.Spec.Containers[0].Env["OTHER"], "${HOME}")
	rep := r.Report(context.Background())
	if len(rep) != 1 || rep[0].State != "pending" || !strings.Contains(rep[0].Message, "provisioning this revision") {
		t.Fatalf("report %+v", rep)
	}
}
