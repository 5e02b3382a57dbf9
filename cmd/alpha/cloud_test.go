package main

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func TestCloudStatusTable(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: streams.HubDomain, StoreDir: t.TempDir()})
	check.NoError(t, err)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(t, err)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: cloud.StatusBucket})
	check.NoError(t, err)
	for _, st := range []cloud.Status{
		{Site: "s1", Node: "n1", Config: "logs", Phase: cloud.PhaseApplied, Applies: 2, Outputs: map[string]string{"bucket_name": "b", "arn": "x"}},
		{Site: "s1", Node: "n2", Config: "bad", Phase: cloud.PhaseFailed, Plan: cloud.PlanSummary{Add: 1}, Error: "configuration \"bad\": terraform plan failed: Error: boom\nmore"},
		{Site: "s2", Node: "n1", Config: "logs", Phase: cloud.PhaseDrifted},
	} {
		data, _ := json.Marshal(st)
		_, err := kv.Put(ctx, cloud.Key(st.Site, st.Node, st.Config), data)
		check.NoError(t, err)
	}
	out := capture(t, func() error { return runCloud(ctx, []string{"-server", s.ClientURL(), "status", "s1"}) })
	t.Log("\n" + out)
	for _, want := range []string{"s1.n1.logs  ", "applied", "arn,bucket_name", "s1.n2.bad", "1 0 0", `configuration "bad": terraform plan failed: Error: boom ...`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s2.n1") {
		t.Errorf("site filter ignored:\n%s", out)
	}
}

func capture(t *testing.T, fn func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	check.NoError(t, err)
	old := os.Stdout
	os.Stdout = w
	err = fn()
	os.Stdout = old
	w.Close()
	check.NoError(t, err)
	b, _ := io.ReadAll(r)
	return string(b)
}
