package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// ocFillLogs publishes n log lines of s1/n1 at site s1's leaf and waits
// until the uplink has stored them in the hub's LOGS stream.
func ocFillLogs(t *testing.T, p *prodtest.Hub, n int) {
	t.Helper()
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	site := p.LeafJetStream(l)
	var acks []jetstream.PubAckFuture
	for i := range n {
		line := streams.LogLine{TS: time.Now().UTC(), Site: "s1", Node: "n1", Kind: streams.LogUnit, Source: "meter.service",
			Level: "info", Text: fmt.Sprintf("line %d", i), ID: fmt.Sprintf("n1.oc.%d", i)}
		data, _ := json.Marshal(line)
		a, err := site.PublishAsync(line.Subject(), data)
		check.NoError(t, err)
		acks = append(acks, a)
	}
	awaitAcks(t, acks)
	_, hub := p.Admin("acme")
	check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
		s, err := hub.Stream(context.Background(), streams.LogsStream)
		if err != nil {
			return err
		}
		info, err := s.Info(context.Background())
		if err != nil {
			return err
		}
		if info.State.Msgs < uint64(n) {
			return fmt.Errorf("hub stream %s holds %d of %d lines", streams.LogsStream, info.State.Msgs, n)
		}
		return nil
	})
}

// TestLogsFailsWhenHubDiesMidRead: `alpha logs` reading many lines from a
// hub that is shut down mid-read returns an error naming the LOGS stream
// instead of waiting for ever in nats.go's remaking of the consumer.
func TestLogsFailsWhenHubDiesMidRead(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	ocFillLogs(t, p, 3000)

	out := &check.Buffer{}
	logsOut = out
	t.Cleanup(func() { logsOut = nil })
	done := make(chan error, 1)
	go func() {
		done <- runLogs(context.Background(), []string{"--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
			"--tls-ca", p.PKI.CA, "--site", "s1", "--node", "n1", "--since", "1h"})
	}()
	check.For(t, 30*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(out.String(), "line 10\n") {
			return fmt.Errorf("alpha logs printed %d lines so far", out.Count("\n"))
		}
		return nil
	})
	p.Hub.Shutdown()
	died := time.Now()
	select {
	case err := <-done:
		t.Logf("alpha logs returned %v after the hub died, %d lines printed", time.Since(died), out.Count("\n"))
		if err == nil || !strings.Contains(err.Error(), streams.LogsStream) {
			t.Fatalf("alpha logs after the hub died mid-read returned %v, want an error naming stream %s", err, streams.LogsStream)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("alpha logs still reading 90 s after the hub died (%d lines printed)", out.Count("\n"))
	}
}
