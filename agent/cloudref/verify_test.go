package cloudref_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// outDoc references one output in a file.
const outDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: t}
spec:
  cloud:
    - name: logs
      main: 'resource "terraform_data" "b" {}'
      outputs: [bucket_name]
  files:
    - path: /etc/logs.conf
      content: "bucket=${cloud.logs.bucket_name}"
`

// cloudBucket is the cloud bucket of a real hub.
func cloudBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	return stack.KV(t, stack.Hub(t).ClientURL(), streams.HubDomain, streams.CloudBucket)
}

// resolved prepares bp and returns /etc/logs.conf's content ("" when the
// file was left out) and the report by resource id.
func resolved(t *testing.T, r *cloudref.Resolver, bp *blueprint.Blueprint) (string, map[string]driver.Resource) {
	t.Helper()
	out, err := r.Prepare(context.Background(), bp)
	check.NoError(t, err)
	content := ""
	for _, f := range out.Spec.Files {
		if f.Path == "/etc/logs.conf" {
			content = f.Content
		}
	}
	rep := map[string]driver.Resource{}
	for _, res := range r.Report(context.Background()) {
		rep[res.ID] = res
	}
	return content, rep
}

// A verifying KV uses only outputs the hub signed for this node's very key:
// an unsigned value with a newline-injected output, one signed by another
// key, one the hub signed for another node, an older genuine one replayed
// and a deleted key are all refused; the last good outputs stay in use and
// cloud:logs says why.
func TestVerifiedKVRefusesForgedOutputs(t *testing.T) {
	ctx := context.Background()
	bp, err := blueprint.Parse([]byte(outDoc))
	check.NoError(t, err)
	digest := bp.Spec.Cloud[0].Digest()
	status := func(v string) []byte {
		b, _ := json.Marshal(streams.CloudStatus{Site: "s1", Node: "n1", Config: "logs", Phase: streams.CloudApplied,
			Digest: digest, AppliedDigest: digest, Outputs: map[string]string{"bucket_name": v}})
		return b
	}
	hubSeed, hubPub, err := sign.NewPublisher()
	check.NoError(t, err)
	otherSeed, _, err := sign.NewPublisher()
	check.NoError(t, err)
	signed := func(seed []byte, key string, seq uint64, v string) []byte {
		env, err := sign.SignAs(sign.OutputsFormat, seed, key, seq, status(v))
		check.NoError(t, err)
		return env
	}
	state := t.TempDir()
	v, err := sign.NewOutputsVerifier([]string{hubPub}, state)
	check.NoError(t, err)
	bucket := cloudBucket(t)
	r := cloudref.New(cloudref.NewKV(bucket, "s1", "n1").Verified(v.Verify, nil), nil)
	put := func(value []byte) {
		t.Helper()
		_, err := bucket.Put(ctx, "s1.n1.logs", value)
		check.NoError(t, err)
	}

	put(signed(hubSeed, "s1.n1.logs", 1, "alpha-a"))
	content, rep := resolved(t, r, bp)
	check.Equal(t, content, "bucket=alpha-a")
	check.Equal(t, rep["cloud:logs"].State, "ok")
	put(signed(hubSeed, "s1.n1.logs", 2, "alpha-b"))
	content, _ = resolved(t, r, bp)
	check.Equal(t, content, "bucket=alpha-b")

	for _, tc := range []struct {
		name  string
		value []byte // nil: delete the key
		why   string
	}{
		{"unsigned, newline injected", status("alpha-b\nExecStartPre=/bin/sh -c evil"), "not signed as " + sign.OutputsFormat},
		{"signed by another key", signed(otherSeed, "s1.n1.logs", 10, "evil"), "signer not trusted"},
		{"the hub's outputs of another node", signed(hubSeed, "s1.n2.logs", 11, "alpha-n2"), "signed for another node"},
		{"an older genuine value replayed", signed(hubSeed, "s1.n1.logs", 1, "alpha-a"), "replay"},
		{"key deleted", nil, "was deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.value == nil {
				check.NoError(t, bucket.Delete(ctx, "s1.n1.logs"))
			} else {
				put(tc.value)
			}
			content, rep := resolved(t, r, bp)
			check.Equal(t, content, "bucket=alpha-b")
			got := rep["cloud:logs"]
			if got.State != "failed" || !strings.Contains(got.Message, "cloud outputs refused") ||
				!strings.Contains(got.Message, tc.why) || !strings.Contains(got.Message, "keeping the last good outputs") {
				t.Fatalf("cloud:logs %s %q, want failed: refused (%s), keeping the last good", got.State, got.Message, tc.why)
			}
		})
	}

	// The hub publishes again: accepted, the report clears.
	put(signed(hubSeed, "s1.n1.logs", 20, "alpha-c"))
	content, rep = resolved(t, r, bp)
	check.Equal(t, content, "bucket=alpha-c")
	check.Equal(t, rep["cloud:logs"].State, "ok")

	// A restarted agent that never accepted a value (and has no copy) does
	// not fall back to the forged one: the file is left out and says why.
	put(status("evil"))
	fresh := cloudref.New(cloudref.NewKV(bucket, "s1", "n1").Verified(v.Verify, nil), nil)
	content, rep = resolved(t, fresh, bp)
	check.Equal(t, content, "")
	if got := rep["file:/etc/logs.conf"]; got.State != "failed" || !strings.Contains(got.Message, "has no accepted outputs") {
		t.Fatalf("file:/etc/logs.conf %s %q", got.State, got.Message)
	}
	if got := rep["cloud:logs"]; got.State != "failed" || !strings.Contains(got.Message, "no good outputs to use") {
		t.Fatalf("cloud:logs %s %q", got.State, got.Message)
	}

	// With the node's copy (stored) it keeps that instead.
	stored := func(config string) *streams.CloudStatus {
		var st streams.CloudStatus
		check.NoError(t, json.Unmarshal(status("alpha-c"), &st))
		return &st
	}
	fromDisk := cloudref.New(cloudref.NewKV(bucket, "s1", "n1").Verified(v.Verify, stored), nil)
	content, _ = resolved(t, fromDisk, bp)
	check.Equal(t, content, "bucket=alpha-c")
}

// Without Verified (--insecure, dev) a KV reads plain statuses as before,
// and a signed one too (its content, unchecked).
func TestUnverifiedKVReadsPlainAndSigned(t *testing.T) {
	ctx := context.Background()
	bp, err := blueprint.Parse([]byte(outDoc))
	check.NoError(t, err)
	bucket := cloudBucket(t)
	r := cloudref.New(cloudref.NewKV(bucket, "s1", "n1"), nil)
	for i, v := range []string{"plain", "signed"} {
		b, _ := json.Marshal(streams.CloudStatus{Phase: streams.CloudApplied, Outputs: map[string]string{"bucket_name": v}})
		if v == "signed" {
			seed, _, err := sign.NewPublisher()
			check.NoError(t, err)
			b, err = sign.SignAs(sign.OutputsFormat, seed, "s1.n1.logs", uint64(i+1), b)
			check.NoError(t, err)
		}
		_, err := bucket.Put(ctx, "s1.n1.logs", b)
		check.NoError(t, err)
		content, _ := resolved(t, r, bp)
		if content != fmt.Sprintf("bucket=%s", v) {
			t.Fatalf("%s: content %q", v, content)
		}
	}
}

// Genuine hub-signed outputs bind to the configuration's revision too: a
// status whose outputs were applied from another configuration under the
// same name (one a tenant admin had the hub provision) is not used; the
// outputs of the revision the node last used still are while the hub
// catches up with a new one.
func TestVerifiedKVBindsConfigurationRevision(t *testing.T) {
	ctx := context.Background()
	parse := func(doc string) *blueprint.Blueprint {
		bp, err := blueprint.Parse([]byte(doc))
		check.NoError(t, err)
		return bp
	}
	bp1 := parse(outDoc)
	bp2 := parse(strings.Replace(outDoc, `"b" {}`, `"b" { input = 2 }`, 1))
	d1, d2 := bp1.Spec.Cloud[0].Digest(), bp2.Spec.Cloud[0].Digest()
	if d1 == d2 {
		t.Fatal("the two revisions have one digest")
	}
	hubSeed, hubPub, err := sign.NewPublisher()
	check.NoError(t, err)
	v, err := sign.NewOutputsVerifier([]string{hubPub}, t.TempDir())
	check.NoError(t, err)
	bucket := cloudBucket(t)
	seq := uint64(0)
	publish := func(digest, applied, value string) {
		t.Helper()
		seq++
		b, _ := json.Marshal(streams.CloudStatus{Site: "s1", Node: "n1", Config: "logs", Phase: streams.CloudApplied,
			Digest: digest, AppliedDigest: applied, Outputs: map[string]string{"bucket_name": value}})
		env, err := sign.SignAs(sign.OutputsFormat, hubSeed, "s1.n1.logs", seq, b)
		check.NoError(t, err)
		_, err = bucket.Put(ctx, "s1.n1.logs", env)
		check.NoError(t, err)
	}
	r := cloudref.New(cloudref.NewKV(bucket, "s1", "n1").Verified(v.Verify, nil), nil)
	want := func(bp *blueprint.Blueprint, content, state, msg string) {
		t.Helper()
		got, rep := resolved(t, r, bp)
		check.Equal(t, got, content)
		if c := rep["cloud:logs"]; c.State != state || !strings.Contains(c.Message, msg) {
			t.Fatalf("cloud:logs %s %q, want %s %q", c.State, c.Message, state, msg)
		}
	}

	// Another configuration's outputs and nothing good yet: wait.
	publish("evil", "evil", "evil\ninjected=1")
	want(bp1, "", "pending", "outputs of another revision")
	publish(d1, d1, "alpha-1")
	want(bp1, "bucket=alpha-1", "ok", "outputs: bucket_name")
	// Another configuration again: the last good outputs stay.
	publish("evil", "evil", "evil\ninjected=1")
	want(bp1, "bucket=alpha-1", "pending", "keeping the last good outputs")
	// The node moves to revision 2; the hub still holds revision 1's
	// outputs while it provisions: they fill in, reported pending.
	publish(d2, d1, "alpha-1")
	want(bp2, "bucket=alpha-1", "pending", "the hub is provisioning this revision")
	publish(d2, d2, "alpha-2")
	want(bp2, "bucket=alpha-2", "ok", "outputs: bucket_name")
}
