package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/maintenance"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func TestHoldCommand(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
		JetStreamDomain: "site1", StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	check.NoError(t, err)
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(s.Shutdown)
	ctx := context.Background()
	url := s.ClientURL()
	// A site leaf makes the bucket (leaf.ensureLocal); this server stands in.
	nc, err := nats.Connect(url)
	check.NoError(t, err)
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, "site1")
	_, err = maintenance.EnsureBucket(ctx, js)
	check.NoError(t, err)

	err = runHold(ctx, []string{"--nats", url, "--site", "site1", "--node", "n1", "--for", "200h", "--reason", "x"})
	if err == nil || !strings.Contains(err.Error(), "--for 200h0m0s") {
		t.Fatalf("a hold beyond the maximum must be refused: %v", err)
	}
	check.NoError(t, runHold(ctx, []string{"--nats", url, "--site", "site1", "--node", "n1", "--for", "2h",
		"--reason", "debugging", "--resource", "unit:meter.service"}))

	kv, err := js.KeyValue(ctx, streams.HoldsBucket)
	check.NoError(t, err)
	holds, err := maintenance.Load("", "site1", "n1", nil)
	check.NoError(t, err)
	check.NoError(t, holds.Watch(ctx, kv, nil))
	h, ok := holds.Current()
	if !ok || h.Reason != "debugging" || h.Resources[0] != "unit:meter.service" || h.Until.Sub(h.Created) != 2*time.Hour {
		t.Fatalf("hold %+v", h)
	}
	check.NoError(t, runHold(ctx, []string{"--nats", url, "--site", "site1", "--node", "n1", "--release"}))
	check.For(t, 2*time.Second, 5*time.Millisecond, func() error {
		if _, ok := holds.Current(); ok {
			return context.DeadlineExceeded
		}
		return nil
	})
}
