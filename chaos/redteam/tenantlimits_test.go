package redteam

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// Finding 4, tenant accounts: a hostile tenant admin cannot reserve more
// of the hub's disk or memory, or make more streams, than its account
// allows, and another tenant still creates and writes.
func TestTenantLimitsHold(t *testing.T) {
	ctx := context.Background()
	lim := accounts.TenantLimits{Storage: 2 << 30, Memory: 1 << 20, Streams: 16, Consumers: 64}
	e := srcNewEnvLimits(t, lim, "victim", "hostile")
	_, hostile := e.admin("hostile")
	_, victim := e.admin("victim")

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
