package cloud_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// bucketHCL stands in for a cloud bucket: a file in the test's temp dir,
// created by a create-time provisioner and removed by a destroy-time one.
// Every create appends a line to applies.log, so the test counts applies
// from the "cloud" side too.
//
// terraform_data does not read anything back, so drift is made visible to a
// plan: while the file exists, triggers_replace is the steady "present";
// when it is gone the value depends on timestamp(), which is unknown at plan
// time, so a replace is planned and the value settles at "present" again at
// apply. The first create and a repair both converge in one apply.
const bucketHCL = `
variable "name" { type = string }
variable "dir" { type = string }
locals {
  path = "${var.dir}/bucket-${var.name}"
  seen = fileexists(local.path) ? "present" : (timestamp() != "" ? "present" : "absent")
}
resource "terraform_data" "bucket" {
  input            = { name = "alpha-${var.name}", path = local.path }
  triggers_replace = [var.name, local.seen]
  provisioner "local-exec" {
    command = "SLEEP && echo ${self.input.name} > ${self.input.path} && echo ${self.input.name} >> ${var.dir}/applies.log"
  }
  provisioner "local-exec" {
    when    = destroy
    command = "rm -f ${self.input.path}"
  }
}
output "bucket_name" { value = terraform_data.bucket.output.name }
output "path" { value = terraform_data.bucket.output.path }
`

func needTerraform(t *testing.T) {
	t.Helper()
	check.NeedCommand(t, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh says how)")
}

// hub starts an embedded NATS server with JetStream in domain hub and the
// blueprints bucket, as the real hub has.
func hub(t testing.TB) (jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: streams.HubDomain, StoreDir: t.TempDir(),
	})
	check.NoError(t, err)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: streams.BlueprintsBucket, History: streams.BlueprintHistory})
	check.NoError(t, err)
	return js, kv
}

type recon struct {
	*cloud.Reconciler
	stop func()
}

func start(t testing.TB, js jetstream.JetStream, mod func(*cloud.Config)) recon {
	t.Helper()
	// AllowExec: local-exec stands in for a cloud in these tests (bucketHCL).
	cfg := cloud.Config{
		JS: js, WorkDir: t.TempDir(), Replan: time.Hour, RetryMin: time.Hour, AllowExec: true,
		LeaseTTL: 5 * time.Second, Log: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := cloud.New(cfg)
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := r.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return recon{r, stop}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// cloudDoc is a blueprint with one cloud configuration per entry of cfgs
// (name -> extra YAML lines) and a container per entry of env.
func cloudDoc(cfgs []string, env map[string]string) string {
	var b strings.Builder
	b.WriteString("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: t}\nspec:\n")
	if len(cfgs) > 0 {
		b.WriteString("  cloud:\n")
		for _, c := range cfgs {
			b.WriteString(c)
		}
	}
	if len(env) > 0 {
		b.WriteString("  containers:\n")
		for name, v := range env {
			fmt.Fprintf(&b, "    - name: %s\n      image: localhost/x:1\n      env: {VALUE: %q}\n", name, v)
		}
	}
	return b.String()
}

// bucketConfig renders one configuration of bucketHCL.
func bucketConfig(name, bucket, dir, drift, sleep string) string {
	hcl := strings.ReplaceAll(bucketHCL, "SLEEP", "sleep "+sleep)
	var b strings.Builder
	fmt.Fprintf(&b, "    - name: %s\n      outputs: [bucket_name, path]\n", name)
	if drift != "" {
		fmt.Fprintf(&b, "      drift: %s\n", drift)
	}
	fmt.Fprintf(&b, "      variables: {name: %q, dir: %q}\n      main: |\n", bucket, dir)
	for _, l := range strings.Split(hcl, "\n") {
		b.WriteString("        " + l + "\n")
	}
	return b.String()
}

func put(t *testing.T, kv jetstream.KeyValue, key, doc string) *blueprint.Blueprint {
	t.Helper()
	bp, err := blueprint.Parse([]byte(doc))
	check.NoError(t, err)
	_, err = kv.Put(context.Background(), key, []byte(doc))
	check.NoError(t, err)
	return bp
}

func status(js jetstream.JetStream, key string) (cloud.Status, error) {
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, cloud.StatusBucket)
	if err != nil {
		return cloud.Status{}, err
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		return cloud.Status{}, err
	}
	var st cloud.Status
	return st, json.Unmarshal(e.Value(), &st)
}

// waitPhase waits for a configuration's phase and, if given, a check.
func waitPhase(t *testing.T, js jetstream.JetStream, key string, phase cloud.Phase, more func(cloud.Status) error) cloud.Status {
	t.Helper()
	var st cloud.Status
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		var err error
		if st, err = status(js, key); err != nil {
			return err
		}
		if st.Phase != phase {
			return fmt.Errorf("%s phase %s (error %q), want %s", key, st.Phase, st.Error, phase)
		}
		if more != nil {
			return more(st)
		}
		return nil
	})
	return st
}

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	check.NoError(t, err)
	return strings.Count(string(b), "\n")
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func cloudKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	kv, err := js.KeyValue(context.Background(), cloud.StatusBucket)
	check.NoError(t, err)
	return kv
}

// Provisioned once, the output reaches the agent side and the container's
// env; then a variable change makes exactly one apply, the outputs follow
// and so does the container. State lives in JetStream: a hub with a fresh
// work dir finds nothing to do.
func TestProvisionAndVariableChange(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	r := start(t, js, func(c *cloud.Config) { c.Replan = 500 * time.Millisecond })
	env := map[string]string{"web": "s3://${cloud.logs.bucket_name}/in"}
	bp := put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "0")}, env))
	st := waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	check.Equal(t, st.Outputs["bucket_name"], "alpha-a")
	check.Equal(t, st.Applied, cloud.PlanSummary{Add: 1})
	check.Equal(t, st.AppliedDigest, bp.Spec.Cloud[0].Digest())
	check.Equal(t, lines(t, filepath.Join(dir, "applies.log")), 1)

	// The agent side: the node's own keys of the cloud bucket.
	res := cloudref.New(cloudref.NewKV(cloudKV(t, js), "s1", "n1"), nil)
	prepared, err := res.Prepare(context.Background(), bp)
	check.NoError(t, err)
	check.Equal(t, prepared.Spec.Containers[0].Env["VALUE"], "s3://alpha-a/in")
	check.Equal(t, bp.Spec.Containers[0].Env["VALUE"], "s3://${cloud.logs.bucket_name}/in") // not edited in place

	// Re-plans find nothing to do.
	plans := r.Stats().Plans
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r.Stats().Plans < plans+2 {
			return errors.New("waiting for two re-plans")
		}
		return nil
	})
	check.Equal(t, r.Stats().Applies, uint64(1))

	// The agent's watch wakes its engine when the hub publishes.
	var woken atomic.Int32
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	go func() {
		_ = res.Watch(wctx, func(string) { woken.Add(1) })
	}()

	// A variable change: one apply, outputs updated, old bucket gone.
	bp = put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "b", dir, "", "0")}, env))
	st = waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, func(st cloud.Status) error {
		if st.Outputs["bucket_name"] != "alpha-b" {
			return fmt.Errorf("outputs %v", st.Outputs)
		}
		return nil
	})
	check.Equal(t, st.Applies, uint64(2))
	check.Equal(t, st.Applied, cloud.PlanSummary{Add: 1, Destroy: 1})
	plans = r.Stats().Plans
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r.Stats().Plans < plans+2 {
			return errors.New("waiting for two re-plans")
		}
		return nil
	})
	check.Equal(t, r.Stats().Applies, uint64(2))
	check.Equal(t, lines(t, filepath.Join(dir, "applies.log")), 2)
	if exists(filepath.Join(dir, "bucket-a")) || !exists(filepath.Join(dir, "bucket-b")) {
		t.Fatal("the replaced bucket was not swapped")
	}
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if woken.Load() == 0 {
			return errors.New("the agent's watch was not woken by the new outputs")
		}
		return nil
	})
	prepared, err = res.Prepare(context.Background(), bp)
	check.NoError(t, err)
	check.Equal(t, prepared.Spec.Containers[0].Env["VALUE"], "s3://alpha-b/in")

	// A second hub with an empty work dir restores state from JetStream.
	r.stop()
	r2 := start(t, js, func(c *cloud.Config) { c.Instance = "hub-2" })
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if r2.Stats().Plans == 0 {
			return errors.New("no plan yet")
		}
		return nil
	})
	waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	check.Equal(t, r2.Stats().Applies, uint64(0))
	check.Equal(t, lines(t, filepath.Join(dir, "applies.log")), 2)
}

// Drift: the bucket removed behind Terraform's back is put back under
// policy repair and only reported under policy report.
func TestDriftRepairOrReport(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	r := start(t, js, func(c *cloud.Config) { c.Replan = 300 * time.Millisecond })
	put(t, bps, "s1.n1", cloudDoc([]string{
		bucketConfig("fix", "fix", dir, "repair", "0"),
		bucketConfig("watch", "watch", dir, "report", "0"),
	}, nil))
	waitPhase(t, js, "s1.n1.fix", cloud.PhaseApplied, nil)
	waitPhase(t, js, "s1.n1.watch", cloud.PhaseApplied, nil)
	check.Equal(t, r.Stats().Applies, uint64(2))

	check.NoError(t, os.Remove(filepath.Join(dir, "bucket-fix")))
	check.NoError(t, os.Remove(filepath.Join(dir, "bucket-watch")))

	st := waitPhase(t, js, "s1.n1.fix", cloud.PhaseApplied, func(st cloud.Status) error {
		if st.Repairs != 1 {
			return fmt.Errorf("repairs %d", st.Repairs)
		}
		return nil
	})
	check.Equal(t, st.Applies, uint64(2))
	if !exists(filepath.Join(dir, "bucket-fix")) {
		t.Fatal("repaired bucket is missing")
	}
	st = waitPhase(t, js, "s1.n1.watch", cloud.PhaseDrifted, nil)
	check.Equal(t, st.Plan, cloud.PlanSummary{Add: 1, Destroy: 1})
	check.Equal(t, st.Outputs["bucket_name"], "alpha-watch") // outputs stay while drifted
	if !strings.Contains(st.Message, "1 to add, 0 to change, 1 to destroy") {
		t.Fatalf("message %q", st.Message)
	}
	// Repaired once, then steady; reported drift is never applied.
	plans := r.Stats().Plans
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if r.Stats().Plans < plans+4 {
			return errors.New("waiting for re-plans")
		}
		return nil
	})
	check.Equal(t, r.Stats().Applies, uint64(3))
	if exists(filepath.Join(dir, "bucket-watch")) {
		t.Fatal("policy report repaired the bucket")
	}

	// The agent reports the drift.
	bp, err := blueprint.Parse([]byte(cloudDoc([]string{bucketConfig("watch", "watch", dir, "report", "0")}, nil)))
	check.NoError(t, err)
	res := cloudref.New(cloudref.NewKV(cloudKV(t, js), "s1", "n1"), nil)
	_, err = res.Prepare(context.Background(), bp)
	check.NoError(t, err)
	rep := res.Report(context.Background())
	if len(rep) != 1 || rep[0].ID != "cloud:watch" || rep[0].State != "drifted" {
		t.Fatalf("report %+v", rep)
	}
}

// Removing the configuration destroys it (its destroy provisioner runs),
// its outputs go, its state leaves the store, and a node still running the
// old revision reports the container that needed it.
func TestRemoveDestroys(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	r := start(t, js, nil)
	env := map[string]string{"web": "${cloud.logs.bucket_name}"}
	old := put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "0"), bucketConfig("keep", "k", dir, "", "0")}, env))
	waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	waitPhase(t, js, "s1.n1.keep", cloud.PhaseApplied, nil)
	if !exists(filepath.Join(dir, "bucket-a")) {
		t.Fatal("bucket not created")
	}

	put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("keep", "k", dir, "", "0")}, nil))
	st := waitPhase(t, js, "s1.n1.logs", cloud.PhaseDestroyed, nil)
	if len(st.Outputs) != 0 {
		t.Fatalf("outputs left after destroy: %v", st.Outputs)
	}
	check.Equal(t, r.Stats().Destroys, uint64(1))
	if exists(filepath.Join(dir, "bucket-a")) || !exists(filepath.Join(dir, "bucket-k")) {
		t.Fatal("destroy removed the wrong bucket")
	}
	obs, err := js.ObjectStore(context.Background(), cloud.StateBucket)
	check.NoError(t, err)
	if _, err := obs.GetInfo(context.Background(), "s1.n1.logs/terraform.tfstate"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("state left behind: %v", err)
	}

	res := cloudref.New(cloudref.NewKV(cloudKV(t, js), "s1", "n1"), nil)
	prepared, err := res.Prepare(context.Background(), old)
	check.NoError(t, err)
	if len(prepared.Spec.Containers) != 0 {
		t.Fatalf("a container with a dangling reference was handed to the drivers: %+v", prepared.Spec.Containers)
	}
	got := map[string]string{}
	for _, x := range res.Report(context.Background()) {
		got[x.ID] = x.State + ": " + x.Message
	}
	for id, want := range map[string]string{
		"cloud:logs":    "failed: destroyed by the hub",
		"cloud:keep":    "ok: applied",
		"container:web": `failed: spec.containers[0].env.VALUE: needs ${cloud.logs.bucket_name}: configuration "logs" was destroyed`,
	} {
		if !strings.HasPrefix(got[id], want) {
			t.Errorf("%s: got %q, want prefix %q", id, got[id], want)
		}
	}

	// Deleting the node's key destroys the rest.
	check.NoError(t, bps.Delete(context.Background(), "s1.n1"))
	waitPhase(t, js, "s1.n1.keep", cloud.PhaseDestroyed, nil)
	if exists(filepath.Join(dir, "bucket-k")) {
		t.Fatal("bucket-k survived its node's deletion")
	}
}

// Two hub instances race on the same configuration: one applies, the other
// waits for the lease and then finds nothing to do.
func TestTwoHubsRace(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	// The slow provisioner keeps the lease held long enough for the race.
	put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "2")}, nil))
	a := start(t, js, func(c *cloud.Config) { c.Instance = "hub-a" })
	b := start(t, js, func(c *cloud.Config) { c.Instance = "hub-b" })
	waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if a.Stats().Plans == 0 || b.Stats().Plans == 0 {
			return fmt.Errorf("plans: a %d, b %d", a.Stats().Plans, b.Stats().Plans)
		}
		return nil
	})
	sa, sb := a.Stats(), b.Stats()
	t.Logf("hub-a %+v, hub-b %+v", sa, sb)
	check.Equal(t, sa.Applies+sb.Applies, uint64(1))
	check.Equal(t, sa.LeaseWaits+sb.LeaseWaits, uint64(1))
	check.Equal(t, lines(t, filepath.Join(dir, "applies.log")), 1)
	if (sa.Applies == 1) == (sa.LeaseWaits == 1) {
		t.Fatal("the hub that applied is the one that waited")
	}
}

// Bad input: an HCL syntax error, a failing provisioner and a listed output
// the configuration does not declare each fail with Terraform's own words,
// naming the configuration; the good configuration and the resources that
// depend on it still apply.
func TestBadInput(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	start(t, js, nil)
	syntax := "    - name: syntax\n      outputs: [x]\n      main: |\n        resource \"terraform_data\" \"x\" {{\n"
	failing := "    - name: failing\n      outputs: [x]\n      main: |\n        resource \"terraform_data\" \"x\" {\n          provisioner \"local-exec\" { command = \"echo quota exceeded >&2; exit 3\" }\n        }\n        output \"x\" { value = terraform_data.x.id }\n"
	ghost := "    - name: ghost\n      outputs: [nope]\n      main: |\n        resource \"terraform_data\" \"x\" {}\n"
	env := map[string]string{"good": "${cloud.logs.bucket_name}", "bad": "${cloud.failing.x}", "worse": "${cloud.ghost.nope}"}
	bp := put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "0"), syntax, failing, ghost}, env))

	waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	for key, want := range map[string][]string{
		"s1.n1.syntax":  {`configuration "syntax": terraform `, "Error: ", "main.tf line 1"},
		"s1.n1.failing": {`configuration "failing": terraform apply failed`, "local-exec provisioner error", "quota exceeded"},
		"s1.n1.ghost":   {`configuration "ghost" declares no output "nope"`},
	} {
		st := waitPhase(t, js, key, cloud.PhaseFailed, nil)
		for _, w := range want {
			if !strings.Contains(st.Error, w) {
				t.Errorf("%s: error %q lacks %q", key, st.Error, w)
			}
		}
	}

	res := cloudref.New(cloudref.NewKV(cloudKV(t, js), "s1", "n1"), nil)
	prepared, err := res.Prepare(context.Background(), bp)
	check.NoError(t, err)
	if len(prepared.Spec.Containers) != 1 || prepared.Spec.Containers[0].Name != "good" || prepared.Spec.Containers[0].Env["VALUE"] != "alpha-a" {
		t.Fatalf("prepared containers %+v", prepared.Spec.Containers)
	}
	got := map[string]string{}
	for _, x := range res.Report(context.Background()) {
		got[x.ID] = x.State + ": " + x.Message
	}
	for id, want := range map[string]string{
		"cloud:logs":      "ok",
		"cloud:syntax":    `failed: configuration "syntax"`,
		"cloud:failing":   `failed: configuration "failing"`,
		"cloud:ghost":     `failed: configuration "ghost" declares no output "nope"`,
		"container:bad":   `failed: spec.containers[`,
		"container:worse": `failed: spec.containers[`,
	} {
		if !strings.HasPrefix(got[id], want) {
			t.Errorf("%s: got %q, want prefix %q", id, got[id], want)
		}
	}
	if !strings.Contains(got["container:worse"], `configuration "ghost" has no output "nope"`) {
		t.Errorf("container:worse: %q", got["container:worse"])
	}
}

// Without Terraform the reconciler says so, marks configurations failed with
// the reason, and keeps running.
func TestTerraformMissing(t *testing.T) {
	js, bps := hub(t)
	var logs check.Buffer
	start(t, js, func(c *cloud.Config) {
		c.Terraform = filepath.Join(t.TempDir(), "no-terraform")
		c.Log = slog.New(slog.NewTextHandler(&logs, nil))
		c.RetryMin = 50 * time.Millisecond
		c.Replan = 100 * time.Millisecond
	})
	put(t, bps, "s1.n1", cloudDoc([]string{"    - name: logs\n      main: 'resource \"terraform_data\" \"x\" {}'\n"}, nil))
	st := waitPhase(t, js, "s1.n1.logs", cloud.PhaseFailed, nil)
	if !strings.Contains(st.Error, `configuration "logs": terraform is not available`) {
		t.Fatalf("error %q", st.Error)
	}
	// Retries happen; the log says it once.
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "cloud configuration not converged"); n < 3 {
			return fmt.Errorf("%d retries so far", n)
		}
		return nil
	})
	check.Equal(t, strings.Count(logs.String(), "terraform missing"), 1)
}

// A configuration can come as a module archive in the artifacts bucket.
func TestModuleArtifact(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	mainTF := "variable \"v\" { type = string }\nresource \"terraform_data\" \"x\" { input = var.v }\noutput \"out\" { value = terraform_data.x.output }\n"
	sum := putModule(t, js, "mod.tgz", map[string]string{"./main.tf": mainTF})
	start(t, js, nil)
	put(t, bps, "s1.n1", cloudDoc([]string{fmt.Sprintf("    - name: m\n      outputs: [out]\n      variables: {v: hello}\n      module: {name: mod.tgz, sha256: %s}\n", sum)}, nil))
	st := waitPhase(t, js, "s1.n1.m", cloud.PhaseApplied, nil)
	check.Equal(t, st.Outputs["out"], "hello")

	put(t, bps, "s1.n2", cloudDoc([]string{fmt.Sprintf("    - name: m\n      module: {name: mod.tgz, sha256: %s}\n", strings.Repeat("0", 64))}, nil))
	st = waitPhase(t, js, "s1.n2.m", cloud.PhaseFailed, nil)
	if !strings.Contains(st.Error, `module "mod.tgz" has sha256`) {
		t.Fatalf("error %q", st.Error)
	}
}

// An air-gapped hub installs providers only from its mirror directory: a
// provider that is not there fails init at once, naming the mirror, instead
// of reaching for a registry.
func TestProviderMirrorOnly(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	mirror := t.TempDir()
	start(t, js, func(c *cloud.Config) { c.ProviderMirror = mirror })
	put(t, bps, "s1.n1", cloudDoc([]string{"    - name: p\n      main: |\n        terraform {\n          required_providers {\n            null = { source = \"hashicorp/null\" }\n          }\n        }\n"}, nil))
	st := waitPhase(t, js, "s1.n1.p", cloud.PhaseFailed, nil)
	for _, w := range []string{`configuration "p": terraform init failed`, "hashicorp/null", "search locations", mirror} {
		if !strings.Contains(st.Error, w) {
			t.Errorf("error %q lacks %q", st.Error, w)
		}
	}
}

// The worked example's cloud resource provisions offline, and its container
// gets the output.
func TestExampleFullProvisions(t *testing.T) {
	needTerraform(t)
	data, err := os.ReadFile(filepath.Join("..", "..", "examples", "full.yaml"))
	check.NoError(t, err)
	js, bps := hub(t)
	start(t, js, nil)
	bp := put(t, bps, "plant-7.gw-1", string(data))
	st := waitPhase(t, js, "plant-7.gw-1.logs", cloud.PhaseApplied, nil)
	check.Equal(t, st.Outputs["bucket_name"], "alpha-logs-plant-7")
	res := cloudref.New(cloudref.NewKV(cloudKV(t, js), "plant-7", "gw-1"), nil)
	prepared, err := res.Prepare(context.Background(), bp)
	check.NoError(t, err)
	env := prepared.Spec.Containers[0].Env
	check.Equal(t, env["LOG_BUCKET"], "alpha-logs-plant-7")
	check.Equal(t, env["LOG_RETENTION_DAYS"], "30")
}

// putModule stores a tar.gz of files in the artifacts bucket and returns its
// sha256.
func putModule(t *testing.T, js jetstream.JetStream, name string, files map[string]string) string {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for path, content := range files {
		check.NoError(t, tw.WriteHeader(&tar.Header{Name: path, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}))
		_, err := tw.Write([]byte(content))
		check.NoError(t, err)
	}
	check.NoError(t, tw.Close())
	check.NoError(t, gz.Close())
	ctx := context.Background()
	obs, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: streams.ArtifactsBucket})
	check.NoError(t, err)
	_, err = obs.PutBytes(ctx, name, buf.Bytes())
	check.NoError(t, err)
	sum := sha256.Sum256(buf.Bytes())
	return hex.EncodeToString(sum[:])
}

// Unless the operator allows it, a provisioner is refused before any
// Terraform step, also deep in a module archive and spelled in JSON with
// escapes; nothing runs. The same inline configuration with exec allowed
// runs.
func TestExecRefusedUnlessAllowed(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	nested := fmt.Sprintf(`{"resource": {"terraform_data": {"x": {"provisioner": [{"local\u002dexec": {"command": "touch %s"}}]}}}}`, ran)
	sum := putModule(t, js, "mod.tgz", map[string]string{
		"main.tf":            "module \"sub\" { source = \"./sub\" }\n",
		"sub/nested.tf.json": nested,
	})
	start(t, js, func(c *cloud.Config) { c.AllowExec = false })
	inline := fmt.Sprintf("    - name: inline\n      main: |\n        resource \"terraform_data\" \"x\" {\n          provisioner \"local-exec\" { command = \"touch %s\" }\n        }\n", ran)
	put(t, bps, "s1.n1", cloudDoc([]string{inline, fmt.Sprintf("    - name: mod\n      module: {name: mod.tgz, sha256: %s}\n", sum)}, nil))
	for key, want := range map[string]string{"s1.n1.inline": "main.tf: local-exec (line 2)", "s1.n1.mod": "sub/nested.tf.json: local-exec (line 1)"} {
		st := waitPhase(t, js, key, cloud.PhaseFailed, nil)
		if !strings.Contains(st.Error, want) || !strings.Contains(st.Error, "--cloud-allow-exec") {
			t.Errorf("%s: error %q does not say %q and how to allow it", key, st.Error, want)
		}
	}
	if exists(ran) {
		t.Fatal("a refused provisioner ran")
	}

	js2, bps2 := hub(t)
	start(t, js2, nil) // AllowExec
	put(t, bps2, "s1.n1", cloudDoc([]string{inline}, nil))
	waitPhase(t, js2, "s1.n1.inline", cloud.PhaseApplied, nil)
	if !exists(ran) {
		t.Fatal("the allowed provisioner did not run")
	}
}

// Confined, Terraform and what it starts run as the given user with the
// limits set: a provisioner sees its uid and /proc/self/limits, and one that
// runs past the time limit is stopped and reported.
func TestConfinedRun(t *testing.T) {
	needTerraform(t)
	check.NeedRoot(t)
	js, bps := hub(t)
	loot := t.TempDir()
	check.NoError(t, os.Chmod(loot, 0o777))
	start(t, js, func(c *cloud.Config) {
		c.Confine = &cloud.Confinement{UID: 65534, GID: 65534, Memory: 3 << 30, CPU: 7 * time.Minute, Procs: 99}
		// The probe's init and apply must fit in it on a loaded machine
		// (3 s did not, beside a 1,000-site benchmark); the slow one
		// sleeps 60 s.
		c.Timeout = 10 * time.Second
	})
	probe := fmt.Sprintf("    - name: probe\n      main: |\n        resource \"terraform_data\" \"x\" {\n          provisioner \"local-exec\" { command = \"{ id; cat /proc/self/limits; } > %s/probe\" }\n        }\n", loot)
	slow := "    - name: slow\n      main: |\n        resource \"terraform_data\" \"x\" {\n          provisioner \"local-exec\" { command = \"sleep 60.4242\" }\n        }\n"
	put(t, bps, "s1.n1", cloudDoc([]string{probe, slow}, nil))
	waitPhase(t, js, "s1.n1.probe", cloud.PhaseApplied, nil)
	got, err := os.ReadFile(filepath.Join(loot, "probe"))
	check.NoError(t, err)
	for _, want := range []string{"uid=65534", "Max cpu time              420", "Max processes             99", "Max address space         3221225472"} {
		if !strings.Contains(string(got), want) {
			t.Errorf("the provisioner's view lacks %q:\n%s", want, got)
		}
	}
	st := waitPhase(t, js, "s1.n1.slow", cloud.PhaseFailed, nil)
	if !strings.Contains(st.Error, "ran longer than the hub's limit") {
		t.Errorf("slow: error %q", st.Error)
	}
	// What the provisioner started goes with the run.
	check.For(t, 20*time.Second, 100*time.Millisecond, func() error {
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			if b, _ := os.ReadFile(p); strings.Contains(string(b), "60.4242") {
				return fmt.Errorf("the slow provisioner's process %s outlived its run", filepath.Dir(p))
			}
		}
		return nil
	})
}

// A value that fails to decode is decoded once, reported under
// SITE.NODE._blueprint as invalid, and never retried; the next good
// revision clears the report, also after a restart of the reconciler.
func TestRefusedBlueprintReportedOnce(t *testing.T) {
	needTerraform(t)
	js, bps := hub(t)
	var mu sync.Mutex
	decodes := map[string]int{}
	counting := func(c *cloud.Config) {
		c.Decode = func(key string, data []byte) (*blueprint.Blueprint, error) {
			mu.Lock()
			decodes[key]++
			mu.Unlock()
			return blueprint.Parse(data)
		}
	}
	r := start(t, js, counting)
	_, err := bps.Put(context.Background(), "s1.bad", []byte("spec: [unclosed"))
	check.NoError(t, err)
	refused := cloud.Key("s1", "bad", cloud.RefusedConfig)
	st := waitPhase(t, js, refused, cloud.PhaseInvalid, nil)
	if !strings.Contains(st.Error, "malformed YAML") || !strings.Contains(st.Message, "revision") {
		t.Errorf("refusal says %q / %q", st.Error, st.Message)
	}
	// A later blueprint goes through the same watch: once it is applied,
	// the bad one would have been retried if anything retried it.
	put(t, bps, "s1.good", cloudDoc([]string{"    - name: ok\n      main: 'resource \"terraform_data\" \"x\" {}'\n"}, nil))
	waitPhase(t, js, "s1.good.ok", cloud.PhaseApplied, nil)
	mu.Lock()
	check.Equal(t, decodes["s1.bad"], 1)
	mu.Unlock()

	r.stop()
	start(t, js, counting)
	put(t, bps, "s1.bad", cloudDoc([]string{"    - name: ok\n      main: 'resource \"terraform_data\" \"x\" {}'\n"}, nil))
	waitPhase(t, js, "s1.bad.ok", cloud.PhaseApplied, nil)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, err := status(js, refused); !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("refusal still published: %v", err)
		}
		return nil
	})
}
