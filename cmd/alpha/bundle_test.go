package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// The four commands as the README runs them, against a production hub and
// an air-gapped leaf: the value arrives, a tampered file is refused with
// the reason, and the uplink is stored once however often it is imported.
func TestBundleCommands(t *testing.T) {
	ctx := context.Background()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bdir := p.AddSite("s1", "acme", nil, "n1")
	_, hjs := p.Admin("acme")
	seed, err := os.ReadFile(p.Op.PublisherSeed("acme"))
	check.NoError(t, err)
	env, err := sign.Sign(seed, "s1.n1", 0, []byte("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: x}\nspec: {}\n"))
	check.NoError(t, err)
	kv, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = kv.Put(ctx, "s1.n1", env)
	check.NoError(t, err)
	l, _ := p.StartLeaf(bdir, prodtest.LeafOptions{NoHub: true})
	sjs := p.LeafJetStream(l)

	dir := t.TempDir()
	file, up := filepath.Join(dir, "s1.alpha"), filepath.Join(dir, "up.alpha")
	opdir, hub := filepath.Join(p.Dir, "operator"), p.Hub.ClientURL()
	check.NoError(t, runBundle(ctx, []string{"export", "--site", "s1", "-o", file, "--operator-dir", opdir, "--hub", hub, "--tls-ca", p.PKI.CA}))

	raw, err := os.ReadFile(file)
	check.NoError(t, err)
	bad := filepath.Join(dir, "bad.alpha")
	raw[bytes.Index(raw, env)+20] ^= 1 // inside the signed blueprint
	check.NoError(t, os.WriteFile(bad, raw, 0o644))
	err = runBundle(ctx, []string{"import", bad, "--bundle", bdir, "--nats", l.ClientURL()})
	if err == nil || !strings.Contains(err.Error(), bundle.ErrTampered.Error()) {
		t.Fatalf("tampered bundle: %v, want %q", err, bundle.ErrTampered)
	}
	skv, err := sjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	if _, err := skv.Get(ctx, "s1.n1"); err != jetstream.ErrKeyNotFound {
		t.Fatalf("after the tampered bundle the site holds s1.n1: %v", err)
	}

	check.NoError(t, runBundle(ctx, []string{"import", file, "--bundle", bdir, "--nats", l.ClientURL()}))
	e, err := skv.Get(ctx, "s1.n1")
	check.NoError(t, err)
	check.Equal(t, string(e.Value()), string(env))

	m := nats.NewMsg("telemetry.s1.n1.test.x")
	m.Header.Set(jetstream.MsgIDHeader, "one")
	_, err = sjs.PublishMsg(ctx, m)
	check.NoError(t, err)
	check.NoError(t, runBundle(ctx, []string{"export-uplink", "-o", up, "--bundle", bdir, "--nats", l.ClientURL()}))
	for i := 0; i < 2; i++ {
		check.NoError(t, runBundle(ctx, []string{"import-uplink", up, "--operator-dir", opdir, "--hub", hub, "--tls-ca", p.PKI.CA}))
	}
	s, err := hjs.Stream(ctx, bundle.BundleStream(streams.TelemetryStream, "s1"))
	check.NoError(t, err)
	check.Equal(t, s.CachedInfo().State.Msgs, uint64(1))
}
