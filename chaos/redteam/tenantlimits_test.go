package redteam

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/internal/stack"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// Finding 4, tenant accounts: a hostile tenant admin cannot reserve more
// of the hub's disk or memory, or make more streams, than its account
// allows, and another tenant still creates and writes.
func TestTenantLimitsHold(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	lim := accounts.TenantLimits{Storage: 2 << 30, Memory: 1 << 20, Streams: 16, Consumers: 64}
	op, err := accounts.InitLimits(filepath.Join(dir, "operator"), "redteam", []string{"victim", "hostile"}, lim)
	check.NoError(t, err)
	pki, err := tlsfiles.WriteTestPKI(dir)
	check.NoError(t, err)
	store := filepath.Join(dir, "hub")
	h, err := hub.Start(ctx, hub.Config{
		StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: stack.Log(),
		Options: func(o *server.Options) error {
			if err := op.HubOptions(filepath.Join(store, "resolver"))(o); err != nil {
				return err
			}
			return pki.Hub(o)
		},
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds("victim"))},
	})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	tlsOpt, err := pki.NATS()
	check.NoError(t, err)
	admin := func(tenant string) jetstream.JetStream {
		nc, js, err := op.AdminJetStream(h.ClientURL(), tenant, tlsOpt)
		check.NoError(t, err)
		t.Cleanup(nc.Close)
		return js
	}
	hostile, victim := admin("hostile"), admin("victim")
	check.NoError(t, hub.Bootstrap(ctx, hostile, 1))

	if _, err := hostile.CreateStream(ctx, jetstream.StreamConfig{Name: "HOG", Subjects: []string{"hog.>"}, MaxBytes: 1 << 30}); err == nil {
		t.Error("hostile tenant reserved 1 GiB more than its 2 GiB allow (the uplink streams hold 1.3 GiB)")
	}
	if _, err := hostile.CreateStream(ctx, jetstream.StreamConfig{Name: "RAM", Subjects: []string{"ram.>"},
		Storage: jetstream.MemoryStorage, MaxBytes: 64 << 20}); err == nil {
		t.Error("hostile tenant reserved 64 MiB of the hub's memory; its limit is 1 MiB")
	}
	made := 0
	for i := range 40 {
		if _, err := hostile.CreateStream(ctx, jetstream.StreamConfig{Name: fmt.Sprintf("S%d", i), Subjects: []string{fmt.Sprintf("s%d.>", i)}}); err != nil {
			break
		}
		made++
	}
	info, err := hostile.AccountInfo(ctx)
	check.NoError(t, err)
	if info.Streams > int(lim.Streams) {
		t.Errorf("hostile tenant holds %d streams (made %d more), limit %d", info.Streams, made, lim.Streams)
	}
	if info.Limits.MaxStore != lim.Storage || info.Limits.MaxStreams != int(lim.Streams) {
		t.Errorf("hub enforces storage %d streams %d for the tenant, want %d and %d",
			info.Limits.MaxStore, info.Limits.MaxStreams, lim.Storage, lim.Streams)
	}
	// The other tenant is untouched: it still creates and writes.
	_, err = victim.CreateStream(ctx, jetstream.StreamConfig{Name: "OWN", Subjects: []string{"own.>"}, MaxBytes: 64 << 20})
	check.NoError(t, err)
	_, err = victim.Publish(ctx, "own.x", []byte("victim's"))
	check.NoError(t, err)
	s, err := victim.Stream(ctx, "OWN")
	check.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, "own.x")
	check.NoError(t, err)
	check.Equal(t, string(m.Data), "victim's")
}
