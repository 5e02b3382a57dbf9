package redteam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// outDoc is a node's blueprint: one cloud configuration whose output names
// a bucket, and a file that carries it.
func outDoc(bucket string) []byte {
	return []byte(`apiVersion: alpha/v1
kind: Blueprint
metadata: {name: app}
spec:
  cloud:
    - name: logs
      outputs: [bucket_name]
      main: |
        resource "terraform_data" "bucket" {
          input = { name = "` + bucket + `" }
        }
        output "bucket_name" { value = terraform_data.bucket.output.name }
  files:
    - path: /etc/app/logs.conf
      content: "bucket=${cloud.logs.bucket_name}\n"
      mode: "0644"
`)
}

// Finding 2 (hostile tenant admin): the agent substituted whatever the
// cloud bucket held into a signed blueprint; an output with a newline
// injected a line into a node's file. Now only outputs the hub signed for
// that very site.node.config, applied from the configuration in the node's
// signed blueprint, are used: forged (a), wrongly signed and misbound (b)
// values, and genuine outputs of a configuration the attacker had the hub
// provision (d) are refused; the last good outputs stay on the node, also
// across an agent restart, and the node's status says why; the hub's own
// outputs are substituted (c).
func TestTenantAdminForgesCloudOutputs(t *testing.T) {
	tf := check.NeedCommand(t, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh)")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()

	// The hub: operator mode, TLS, and the cloud reconciler in tenant t1's
	// account signing outputs with the operator directory's hub key.
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"t1"})
	check.NoError(t, err)
	pki, err := testpki.Write(dir)
	check.NoError(t, err)
	store := filepath.Join(dir, "hub")
	h, err := hub.Start(ctx, hub.Config{StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: stack.Log(),
		Options: func(o *server.Options) error {
			if err := op.HubOptions(filepath.Join(store, "resolver"))(o); err != nil {
				return err
			}
			return pki.Hub(o)
		},
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds("t1"))}})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	tlsOpt, err := pki.NATS()
	check.NoError(t, err)
	// The attacker: t1's administrator, at the hub, over TLS.
	_, admin, err := op.AdminJetStream(h.ClientURL(), "t1", tlsOpt)
	check.NoError(t, err)

	pubKey, err := op.PublisherKey("t1")
	check.NoError(t, err)
	pubSeed, err := os.ReadFile(op.PublisherSeed("t1"))
	check.NoError(t, err)
	hubSeed, err := os.ReadFile(op.HubOutputsSeed())
	check.NoError(t, err)
	rnc, err := h.Connect(nats.UserCredentials(op.AdminCreds("t1")))
	check.NoError(t, err)
	t.Cleanup(rnc.Close)
	rjs, err := jetstream.New(rnc)
	check.NoError(t, err)
	rec, err := cloud.New(cloud.Config{JS: rjs, Terraform: tf, WorkDir: filepath.Join(dir, "cloud"), Replan: time.Hour,
		OutputsSeed: hubSeed, Log: stack.Log(),
		// Signed blueprints are provisioned; so are unsigned ones, as a hub
		// without the fix of finding 1 does: the outputs must hold on their
		// own (attack d).
		Decode: func(key string, data []byte) (*blueprint.Blueprint, error) {
			p, err := sign.Open(map[string]bool{pubKey: true}, key, data)
			if errors.Is(err, sign.ErrUnsigned) {
				return blueprint.Parse(data)
			}
			if err != nil {
				return nil, err
			}
			return blueprint.Parse(p.Blueprint)
		}})
	check.NoError(t, err)
	recDone := make(chan struct{})
	go func() { defer close(recDone); rec.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-recDone })

	// Site s1 from its bundle, and node n1's agent with production checks.
	bundle := filepath.Join(dir, "bundle-s1")
	_, err = op.AddSite("s1", "t1", []string{"n1", "n2"}, bundle)
	check.NoError(t, err)
	sys, err := op.SysConn(h.ClientURL(), tlsOpt)
	check.NoError(t, err)
	check.NoError(t, op.PushSite(ctx, sys, "t1", "s1"))
	sys.Close()
	check.NoError(t, accounts.RegisterSite(ctx, admin, "s1"))
	setup, err := accounts.Leaf(bundle)
	check.NoError(t, err)
	l, err := leaf.Start(ctx, leaf.Config{Site: "s1", HubURLs: []string{h.LeafURL()}, StoreDir: filepath.Join(dir, "leaf"),
		Listen: "127.0.0.1:-1", Log: stack.Log(), ClientOptions: setup.ClientOptions, NoRegister: true,
		Options: func(o *server.Options) error {
			if err := setup.Options(o); err != nil {
				return err
			}
			return pki.Leaf(o)
		}})
	check.NoError(t, err)
	t.Cleanup(l.Shutdown)

	state := filepath.Join(dir, "agent")
	root := filepath.Join(dir, "root")
	// startAgent runs n1's agent as `alpha agent` does in production:
	// blueprints checked against trusted-keys, outputs against
	// hub-outputs.pub, both from the bundle.
	startAgent := func() (stop func()) {
		t.Helper()
		trusted, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.TrustedKeysFile))
		check.NoError(t, err)
		bv, err := sign.NewVerifier(trusted, state)
		check.NoError(t, err)
		hubKeys, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.HubOutputsKeyFile))
		check.NoError(t, err)
		ov, err := sign.NewOutputsVerifier(hubKeys, state)
		check.NoError(t, err)
		aopts, err := accounts.AgentOptions("s1", "n1", filepath.Join(bundle, accounts.AgentSeedFile("n1")))
		check.NoError(t, err)
		a, err := agent.New(agent.Config{Site: "s1", Node: "n1", NATSURL: l.ClientURL(), Root: root, StateDir: state,
			Log: stack.Log(), NATSOptions: append(aopts, tlsOpt), Resync: time.Second, Sandbox: true,
			Verify: bv.Verify, VerifyCloud: ov.Verify})
		check.NoError(t, err)
		actx, acancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); a.Run(actx) }()
		var once sync.Once
		stop = func() { once.Do(func() { acancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	stopAgent := startAgent()

	// Signed blueprints for n1 and n2: the hub provisions both and
	// publishes each node's outputs, signed.
	bps, err := admin.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	publish := func(key, bucket string) {
		t.Helper()
		env, err := sign.Sign(pubSeed, key, 0, outDoc(bucket))
		check.NoError(t, err)
		_, err = bps.Put(ctx, key, env)
		check.NoError(t, err)
	}
	publish("s1.n1", "logs-of-n1")
	publish("s1.n2", "logs-of-n2")

	file := filepath.Join(root, "etc/app/logs.conf")
	hubStatus, err := admin.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	cloudKV, err := admin.KeyValue(ctx, cloud.StatusBucket)
	check.NoError(t, err)
	// cloudLogs is cloud:logs as the hub sees node n1's status, from a
	// reconcile after since.
	var since time.Time
	cloudLogs := func() (streams.Resource, error) {
		ns, err := stack.NodeStatus(hubStatus, "s1", "n1")
		if err != nil {
			return streams.Resource{}, err
		}
		if ns.LastReconcile.Before(since) {
			return streams.Resource{}, fmt.Errorf("n1's status is from a reconcile at %s, before %s", ns.LastReconcile, since)
		}
		for _, r := range ns.Resources {
			if r.ID == "cloud:logs" {
				return r, nil
			}
		}
		return streams.Resource{}, fmt.Errorf("no cloud:logs in n1's status (phase %s)", ns.Phase)
	}
	substituted := func(content string) {
		t.Helper()
		check.For(t, 90*time.Second, 50*time.Millisecond, func() error {
			if err := stack.FileIs(file, content); err != nil {
				return err
			}
			r, err := cloudLogs()
			if err != nil {
				return err
			}
			if r.State != "ok" {
				return fmt.Errorf("cloud:logs %s %q", r.State, r.Message)
			}
			return nil
		})
	}
	var refusedAs func(what, state, why string)
	// refused waits until n1's status at the hub says the value was refused
	// for why; the injected line must never reach the file meanwhile.
	refused := func(what, why string) { refusedAs(what, "failed", why) }
	refusedAs = func(what, state, why string) {
		t.Helper()
		check.For(t, 30*time.Second, 20*time.Millisecond, func() error {
			if b, _ := os.ReadFile(file); strings.Contains(string(b), "injected") || !strings.Contains(string(b), "bucket=logs-of-n1\n") {
				t.Fatalf("%s: the node's file now holds %q", what, b)
			}
			r, err := cloudLogs()
			if err != nil {
				return err
			}
			if r.State != state || !strings.Contains(r.Message, "cloud outputs refused") || !strings.Contains(r.Message, why) {
				return fmt.Errorf("%s: cloud:logs %s %q, want %s: refused (%s)", what, r.State, r.Message, state, why)
			}
			if !strings.Contains(r.Message, "keeping the last good outputs") {
				return fmt.Errorf("%s: cloud:logs %q does not keep the last good outputs", what, r.Message)
			}
			return nil
		})
		check.NoError(t, stack.FileIs(file, "bucket=logs-of-n1\n"))
	}

	// (c) The hub's own output reaches the file.
	substituted("bucket=logs-of-n1\n")

	// (a) An unsigned status with a newline in the output.
	digest := func() string {
		bp, err := blueprint.Parse(outDoc("logs-of-n1"))
		check.NoError(t, err)
		return bp.Spec.Cloud[0].Digest()
	}()
	forged, _ := json.Marshal(cloud.Status{Site: "s1", Node: "n1", Config: "logs", Phase: cloud.PhaseApplied,
		Digest: digest, AppliedDigest: digest, Applies: 1, Updated: time.Now().UTC(),
		Outputs: map[string]string{"bucket_name": "logs-of-n1\ninjected=1"}})
	_, err = cloudKV.Put(ctx, "s1.n1.logs", forged)
	check.NoError(t, err)
	refused("unsigned output", "not signed as "+sign.OutputsFormat)

	// (b) The same, signed by a key of the attacker's own.
	evilSeed, _, err := sign.NewPublisher()
	check.NoError(t, err)
	env, err := sign.SignAs(sign.OutputsFormat, evilSeed, "s1.n1.logs", 0, forged)
	check.NoError(t, err)
	_, err = cloudKV.Put(ctx, "s1.n1.logs", env)
	check.NoError(t, err)
	refused("output signed by another key", "signer not trusted")

	// (b) A genuine hub-signed value, n2's, copied to n1's key.
	var n2 jetstream.KeyValueEntry
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		e, err := cloudKV.Get(ctx, "s1.n2.logs")
		if err != nil {
			return err
		}
		if st, _, err := cloud.ParseStatus(e.Value()); err != nil || st.Phase != cloud.PhaseApplied {
			return fmt.Errorf("n2's outputs not applied yet: %s %v", st.Phase, err)
		}
		n2 = e
		return nil
	})
	_, err = cloudKV.Put(ctx, "s1.n1.logs", n2.Value())
	check.NoError(t, err)
	refused("n2's signed output copied to n1", "signed for another node")

	// A restarted agent still refuses it and keeps the last good outputs,
	// now from its own copy on the node (it has accepted nothing since).
	stopAgent()
	since = time.Now() // only the new agent's reconciles count
	startAgent()
	refused("after a restart of the agent", "signed for another node")

	// (d) The attacker puts an unsigned blueprint on n1's key whose
	// configuration of the same name outputs the injected line; a hub that
	// provisions it signs those outputs for s1.n1.logs. The agent refuses
	// the blueprint, keeps its signed one, and its configuration's revision
	// is not the one these outputs come from.
	_, err = bps.Put(ctx, "s1.n1", outDoc(`logs-of-n1\ninjected=1`))
	check.NoError(t, err)
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		e, err := cloudKV.Get(ctx, "s1.n1.logs")
		if err != nil {
			return err
		}
		st, signed, err := cloud.ParseStatus(e.Value())
		if err != nil || !signed || !strings.Contains(st.Outputs["bucket_name"], "\ninjected=1") {
			return fmt.Errorf("the hub has not signed the attacker's outputs yet: %+v signed=%v %v", st.Outputs, signed, err)
		}
		return nil
	})
	refusedAs("hub-signed outputs of the attacker's configuration", "pending", "outputs of another revision")

	// (c) The hub publishes n1's next revision: signed, bound, substituted.
	publish("s1.n1", "logs-of-n1-b")
	substituted("bucket=logs-of-n1-b\n")
}
