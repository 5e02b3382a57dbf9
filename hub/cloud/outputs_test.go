package cloud_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// With an outputs seed the hub publishes every status signed for its key;
// a status someone else wrote there (a tenant admin) is not read back as
// the hub's own: the next pass republishes the real outputs, signed, and
// the forged value is never re-signed.
func TestOutputsSigned(t *testing.T) {
	needTerraform(t)
	ctx := context.Background()
	js, bps := hub(t)
	dir := t.TempDir()
	seed, pub, err := sign.NewPublisher()
	check.NoError(t, err)
	start(t, js, func(c *cloud.Config) { c.OutputsSeed = seed; c.Replan = 300 * time.Millisecond })
	env := map[string]string{"web": "${cloud.logs.bucket_name}"}
	bp := put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "0")}, env))
	var kv jetstream.KeyValue
	check.For(t, 10*time.Second, 20*time.Millisecond, func() (err error) {
		kv, err = js.KeyValue(ctx, cloud.StatusBucket)
		return err
	})
	trusted := map[string]bool{pub: true}
	signedStatus := func() (cloud.Status, error) {
		var st cloud.Status
		e, err := kv.Get(ctx, "s1.n1.logs")
		if err != nil {
			return st, err
		}
		p, err := sign.OpenAs(sign.OutputsFormat, trusted, "s1.n1.logs", e.Value())
		if err != nil {
			return st, err
		}
		return st, json.Unmarshal(p.Blueprint, &st)
	}
	applied := func(want string) {
		t.Helper()
		check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
			st, err := signedStatus()
			if err != nil {
				return err
			}
			if st.Phase != cloud.PhaseApplied || st.Outputs["bucket_name"] != want {
				return fmt.Errorf("phase %s outputs %v (error %q)", st.Phase, st.Outputs, st.Error)
			}
			return nil
		})
	}
	applied("alpha-a")

	forged, _ := json.Marshal(cloud.Status{Site: "s1", Node: "n1", Config: "logs", Phase: cloud.PhaseApplied,
		Digest: bp.Spec.Cloud[0].Digest(), AppliedDigest: bp.Spec.Cloud[0].Digest(), Outputs: map[string]string{"bucket_name": "evil\ninjected"}})
	rev, err := kv.Put(ctx, "s1.n1.logs", forged)
	check.NoError(t, err)
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		e, err := kv.Get(ctx, "s1.n1.logs")
		if err != nil {
			return err
		}
		if e.Revision() <= rev {
			return fmt.Errorf("the forged revision %d is still the newest", rev)
		}
		return nil
	})
	applied("alpha-a")
	// Rewritten from the hub's own last value in the history, not from zero.
	st, err := signedStatus()
	check.NoError(t, err)
	check.Equal(t, st.Applies, uint64(1))

	// An agent's verifying KV takes it.
	v, err := sign.NewOutputsVerifier([]string{pub}, t.TempDir())
	check.NoError(t, err)
	res := cloudref.New(cloudref.NewKV(kv, "s1", "n1").Verified(v.Verify, nil), nil)
	out, err := res.Prepare(ctx, bp)
	check.NoError(t, err)
	if len(out.Spec.Containers) != 1 || out.Spec.Containers[0].Env["VALUE"] != "alpha-a" {
		t.Fatalf("prepared %+v", out.Spec.Containers)
	}
	for _, e := range res.Report(ctx) {
		if e.ID == "cloud:logs" && (e.State != "ok" || strings.Contains(e.Message, "refused")) {
			t.Fatalf("cloud:logs %s %q", e.State, e.Message)
		}
	}
}
