package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

const tenantCloudDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: y-app}
spec:
  cloud:
    - name: logs
      outputs: [bucket_name]
      main: |
        resource "terraform_data" "bucket" {
          input = { name = "logs-of-y" }
        }
        output "bucket_name" { value = terraform_data.bucket.output.name }
`

// Under operator mode the hub runs a cloud reconciler in every tenant's
// account: a configuration in the second tenant's blueprint is provisioned
// and its outputs published in that tenant's account only.
func TestCloudReconcilerPerTenant(t *testing.T) {
	tf := check.NeedCommand(t, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh)")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"x", "y"})
	check.NoError(t, err)
	store := filepath.Join(dir, "hub")
	hc := hub.Config{StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: log,
		Options:       op.HubOptions(filepath.Join(store, "resolver")),
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds("x"))}}
	h, err := hub.Start(ctx, hc)
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	check.NoError(t, bootstrapTenants(ctx, h, op, log))
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	cf := addCloudFlags(fs)
	check.NoError(t, fs.Parse([]string{"--terraform", tf}))
	stopCloud, err := cf.start(ctx, h, store, op, log)
	t.Cleanup(stopCloud) // before the hub's shutdown
	check.NoError(t, err)

	admin := func(tenant string) jetstream.JetStream {
		nc, err := h.Connect(nats.UserCredentials(op.AdminCreds(tenant)))
		check.NoError(t, err)
		t.Cleanup(nc.Close)
		js, err := jetstream.New(nc)
		check.NoError(t, err)
		return js
	}
	yjs, xjs := admin("y"), admin("x")
	bp, err := yjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	// Operator mode provisions only what the tenant's publisher signed.
	seed, err := os.ReadFile(op.PublisherSeed("y"))
	check.NoError(t, err)
	signed, err := sign.Sign(seed, "s1.n1", 0, []byte(tenantCloudDoc))
	check.NoError(t, err)
	_, err = bp.Put(ctx, "s1.n1", signed)
	check.NoError(t, err)

	check.For(t, 90*time.Second, 100*time.Millisecond, func() error {
		kv, err := yjs.KeyValue(ctx, cloud.StatusBucket)
		if err != nil {
			return err
		}
		e, err := kv.Get(ctx, cloud.Key("s1", "n1", "logs"))
		if err != nil {
			return fmt.Errorf("tenant y: no cloud status yet: %w", err)
		}
		st, signed, err := cloud.ParseStatus(e.Value())
		check.NoError(t, err)
		if st.Phase != cloud.PhaseApplied || st.Outputs["bucket_name"] != "logs-of-y" {
			return fmt.Errorf("tenant y: %s %v %s", st.Phase, st.Outputs, st.Error)
		}
		if !signed {
			t.Fatal("operator mode published the outputs unsigned")
		}
		return nil
	})
	if kv, err := xjs.KeyValue(ctx, cloud.StatusBucket); err == nil {
		if _, err := kv.Get(ctx, cloud.Key("s1", "n1", "logs")); err == nil {
			t.Fatal("tenant x's account holds tenant y's cloud status")
		}
	}
}
