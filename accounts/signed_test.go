package accounts_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func hello(greeting string) []byte {
	return []byte(`apiVersion: alpha/v1
kind: Blueprint
metadata:
  name: hello
spec:
  files:
    - path: /etc/hello.conf
      content: "greeting=` + greeting + `\n"
      mode: "0644"
`)
}

// The whole chain under operator mode and TLS: a publisher signs, the hub
// stores, the site mirrors, the agent verifies and applies; tampered,
// untrusted and replayed revisions are refused and the last good one stays.
func TestSignedBlueprintEndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, "t1")
	bundle := e.addSite("a", "t1", "n1")
	l := e.startLeaf(bundle, nil)

	trusted, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.TrustedKeysFile))
	check.NoError(t, err)
	state := t.TempDir()
	v, err := sign.NewVerifier(trusted, state)
	check.NoError(t, err)
	opts, err := accounts.AgentOptions("a", "n1", filepath.Join(bundle, accounts.AgentSeedFile("n1")))
	check.NoError(t, err)
	root := t.TempDir()
	a, err := agent.New(agent.Config{Site: "a", Node: "n1", NATSURL: l.ClientURL(), Root: root, StateDir: state,
		Log: quiet(), NATSOptions: append(opts, e.tls()), Verify: v.Verify, Resync: time.Second})
	check.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	seed, err := os.ReadFile(e.op.PublisherSeed("t1"))
	check.NoError(t, err)
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	put := func(value []byte) uint64 {
		t.Helper()
		rev, err := hbp.Put(ctx, "a.n1", value)
		check.NoError(t, err)
		return rev
	}
	file := filepath.Join(root, "etc/hello.conf")
	applied := func(rev uint64, content string) {
		t.Helper()
		check.For(t, 15*time.Second, 50*time.Millisecond, func() error {
			st := a.Status()
			if st.AppliedRevision != rev || st.Phase != "Converged" {
				return fmt.Errorf("status %s applied %d, want %d: %s %v", st.Phase, st.AppliedRevision, rev, st.Message, st.Invalid)
			}
			got, err := os.ReadFile(file)
			if err != nil || string(got) != content {
				return fmt.Errorf("file %q %v", got, err)
			}
			return nil
		})
	}
	refused := func(rev, good uint64, content, why string) {
		t.Helper()
		check.For(t, 15*time.Second, 50*time.Millisecond, func() error {
			st := a.Status()
			if st.DesiredRevision != rev || st.Phase != "Invalid" {
				return fmt.Errorf("status %s desired %d, want Invalid at %d", st.Phase, st.DesiredRevision, rev)
			}
			if !strings.Contains(strings.Join(st.Invalid, " "), why) {
				return fmt.Errorf("invalid %v, want %q", st.Invalid, why)
			}
			if st.AppliedRevision != good {
				return fmt.Errorf("applied %d, want the last good %d", st.AppliedRevision, good)
			}
			return nil
		})
		got, err := os.ReadFile(file)
		check.NoError(t, err)
		check.Equal(t, string(got), content)
		// The refusal reaches the hub as the node's status.
		hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
		check.NoError(t, err)
		check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
			en, err := hst.Get(ctx, "a.n1")
			if err != nil {
				return err
			}
			var ns streams.NodeStatus
			if err := json.Unmarshal(en.Value(), &ns); err != nil {
				return err
			}
			if ns.DesiredRevision != rev || !strings.Contains(strings.Join(ns.Invalid, " "), why) {
				return fmt.Errorf("hub status %s desired %d %v", ns.Phase, ns.DesiredRevision, ns.Invalid)
			}
			return nil
		})
	}

	v1, err := sign.Sign(seed, "a.n1", 0, hello("one"))
	check.NoError(t, err)
	r1 := put(v1)
	applied(r1, "greeting=one\n")
	v2, err := sign.Sign(seed, "a.n1", 0, hello("two"))
	check.NoError(t, err)
	r2 := put(v2)
	applied(r2, "greeting=two\n")

	t.Run("tampered", func(t *testing.T) {
		var env sign.Envelope
		check.NoError(t, json.Unmarshal(v2, &env))
		env.Payload = []byte(strings.Replace(string(env.Payload), "dHdv", "ZXZp", 1)) // "two" -> "evi" in base64
		if string(env.Payload) == string(mustPayload(t, v2)) {
			t.Fatal("tampering changed nothing")
		}
		bad, _ := json.Marshal(env)
		refused(put(bad), r2, "greeting=two\n", "bad signature")
	})
	t.Run("untrusted signer", func(t *testing.T) {
		other, _, err := sign.NewPublisher()
		check.NoError(t, err)
		bad, err := sign.Sign(other, "a.n1", 0, hello("evil"))
		check.NoError(t, err)
		refused(put(bad), r2, "greeting=two\n", "signer not trusted")
	})
	t.Run("unsigned", func(t *testing.T) {
		refused(put(hello("evil")), r2, "greeting=two\n", "not a signed blueprint")
	})
	t.Run("older revision replayed", func(t *testing.T) {
		refused(put(v1), r2, "greeting=two\n", "replay")
	})
	t.Run("unsigned delete", func(t *testing.T) {
		check.NoError(t, hbp.Delete(ctx, "a.n1"))
		en, err := hbp.Get(ctx, "a.n1")
		if err == nil {
			t.Fatalf("key still there: %q", en.Value())
		}
		st, err := hjs.Stream(ctx, "KV_"+streams.BlueprintsBucket)
		check.NoError(t, err)
		info, err := st.Info(ctx)
		check.NoError(t, err)
		refused(info.State.LastSeq, r2, "greeting=two\n", "unsigned delete refused")
	})
	// A fresh signature is applied again after the refusals.
	v3, err := sign.Sign(seed, "a.n1", 0, hello("three"))
	check.NoError(t, err)
	applied(put(v3), "greeting=three\n")
}

func mustPayload(t *testing.T, v []byte) []byte {
	var env sign.Envelope
	check.NoError(t, json.Unmarshal(v, &env))
	return env.Payload
}
