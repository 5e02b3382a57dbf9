package accounts_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// The narrow permissions still let a site do its work: mirror its keys,
// send its status up.
func TestSitePlumbingWorksUnderOperatorMode(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "t1")
	bundle := e.addSite("a", "t1", "n1")
	var log check.Buffer
	l := e.startLeaf(bundle, &log)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(log.String())
		}
	})
	_, hjs := e.admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = hbp.Put(ctx, "a.n1", []byte("for a"))
	check.NoError(t, err)

	nc := e.agentConn(l, bundle, "a", "n1")
	js, err := jetstream.NewWithDomain(nc, "a")
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
		if err != nil {
			return err
		}
		en, err := kv.Get(ctx, "a.n1")
		if err != nil {
			return err
		}
		if string(en.Value()) != "for a" {
			return fmt.Errorf("value %q", en.Value())
		}
		return nil
	})
	// Blueprints in bulk, enough to exercise the mirror's flow control.
	const keys = 400
	big := make([]byte, 16<<10)
	for i := range keys {
		if _, err := hbp.Put(ctx, fmt.Sprintf("a.bulk-%d", i), big); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		s, err := js.Stream(ctx, "KV_"+streams.BlueprintsBucket)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != keys+1 {
			return fmt.Errorf("site mirror holds %d of %d", info.State.Msgs, keys+1)
		}
		return nil
	})
	st, err := js.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	_, err = st.Put(ctx, "a.n1", []byte(`{"phase":"Converged"}`))
	check.NoError(t, err)
	hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		_, err := hst.Get(ctx, "a.n1")
		return err
	})
	// Telemetry in bulk, enough to exercise flow control on the uplink.
	ljs := js
	const n = 3000
	payload := make([]byte, 1024)
	for i := range n {
		if _, err := ljs.PublishAsync("telemetry.a.n1.cpu", payload); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	select {
	case <-ljs.PublishAsyncComplete():
	case <-time.After(10 * time.Second):
		t.Fatal("telemetry publishes not acknowledged")
	}
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		s, err := hjs.Stream(ctx, streams.TelemetryStream)
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != n {
			return fmt.Errorf("hub TELEMETRY holds %d of %d", info.State.Msgs, n)
		}
		return nil
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Log("hub log:\n" + e.log.String())
		}
	})
	// The leaf's own check of its hub side passes too.
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if !l.Synced() {
			return errors.New("leaf not synced")
		}
		return nil
	})
	if n := log.Count("Violation"); n > 0 {
		t.Errorf("%d permission violations in the leaf's log", n)
	}
	if n := e.log.Count("Violation"); n > 0 {
		t.Errorf("%d permission violations in the hub's log:\n%s", n, e.log)
	}
}

// Both hub listeners demand TLS: a plain client is refused, and the
// leafnode listener announces TLS as required before anything else.
func TestHubRequiresTLS(t *testing.T) {
	e := newEnv(t, "t1")
	u := strings.Replace(e.hub.ClientURL(), "tls://", "nats://", 1)
	if nc, err := nats.Connect(u, nats.UserCredentials(e.op.AdminCreds("t1"))); err == nil {
		nc.Close()
		t.Fatal("connected to the hub without TLS")
	}
	// With TLS and without credentials: refused too (operator mode).
	if nc, err := nats.Connect(e.hub.ClientURL(), e.tls()); err == nil {
		nc.Close()
		t.Fatal("connected to the hub without credentials")
	}
	c, err := net.Dial("tcp", strings.TrimPrefix(e.hub.LeafURL(), "nats-leaf://"))
	check.NoError(t, err)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	info, err := bufio.NewReader(c).ReadString('\n')
	check.NoError(t, err)
	if !strings.Contains(info, `"tls_required":true`) {
		t.Fatalf("leafnode INFO does not require TLS: %s", info)
	}
}

// A tenant added while the hub runs works at once: its account is pushed
// to the resolver, its buckets created, a site of it served.
func TestTenantAddedWhileHubRuns(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "x")
	if _, _, err := e.op.AdminJetStream(e.hub.ClientURL(), "z", e.tls()); err == nil {
		t.Fatal("an unknown tenant's admin connected")
	}
	check.NoError(t, e.op.AddTenant("z"))
	check.NoError(t, e.op.Push(ctx, e.hub.ClientURL(), "z", e.tls()))
	nc, js, err := e.op.AdminJetStream(e.hub.ClientURL(), "z", e.tls())
	check.NoError(t, err)
	defer nc.Close()
	check.NoError(t, hub.Bootstrap(ctx, js, 1))
	// `alpha hub` serves a tenant it finds in its operator directory
	// (buckets, ingest, the reset gateway its sites' mirrors need).
	check.NoError(t, e.hub.ServeTenant(ctx, nats.UserCredentials(e.op.AdminCreds("z"))))
	bundle := e.addSite("s", "z", "n1")
	l := e.startLeaf(bundle, nil)
	kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	_, err = kv.Put(ctx, "s.n1", []byte("for z"))
	check.NoError(t, err)
	waitValue(t, e.agentConn(l, bundle, "s", "n1"), "s", "s.n1", "for z")
}
