package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
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
	prodtest.Acked(t, acks)
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

// ocHeld is a Buffer whose writer is held, once it has written after
// lines, until open is closed: a reader that pulls in batches is faster
// than a test's polling, so the test holds it mid-read.
type ocHeld struct {
	check.Buffer
	after      int
	held, open chan struct{}
	once       sync.Once
}

func (h *ocHeld) Write(p []byte) (int, error) {
	if h.Count("\n") >= h.after {
		h.once.Do(func() { close(h.held) })
		<-h.open
	}
	return h.Buffer.Write(p)
}

// TestLogsFailsWhenHubDiesMidRead: `alpha logs` reading many lines from a
// hub that is shut down mid-read returns an error naming the LOGS stream
// instead of waiting for ever in nats.go's remaking of the consumer or
// reconnecting.
func TestLogsFailsWhenHubDiesMidRead(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	ocFillLogs(t, p, 3000)

	out := &ocHeld{after: 10, held: make(chan struct{}), open: make(chan struct{})}
	logsOut = out
	t.Cleanup(func() { logsOut = nil })
	done := make(chan error, 1)
	go func() {
		done <- runLogs(context.Background(), []string{"--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
			"--tls-ca", p.PKI.CA, "--site", "s1", "--node", "n1", "--since", "1h"})
	}()
	select {
	case <-out.held:
	case err := <-done:
		t.Fatalf("alpha logs ended before it printed 10 lines: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("alpha logs printed %d lines in 30 s", out.Count("\n"))
	}
	p.Hub.Shutdown()
	close(out.open)
	check.FailsNaming(t, done, 90*time.Second, "alpha logs from a hub that died mid-read", streams.LogsStream)
	if n := out.Count("\n"); n >= 3000 {
		t.Fatalf("alpha logs printed all %d lines of a hub that died before they were read", n)
	}
}

// ocTail starts `alpha telemetry tail` of site s1 at p's hub; its output
// and, once it returns, its error.
func ocTail(t *testing.T, p *prodtest.Hub) (*check.Buffer, <-chan error) {
	t.Helper()
	out := &check.Buffer{}
	tailOut = out
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- runTelemetry(ctx, []string{"tail", "--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
			"--tls-ca", p.PKI.CA, "--site", "s1", "--json"})
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
		tailOut = nil
	})
	return out, done
}

// ocSeen publishes metrics of s1/n1 numbered prefix.1, prefix.2, ... at
// the site until the tail printed one of them.
func ocSeen(t *testing.T, site jetstream.JetStream, out *check.Buffer, prefix string) {
	t.Helper()
	i := 0
	check.For(t, 60*time.Second, 500*time.Millisecond, func() error {
		i++
		m := streams.Metric{Name: "cpu.percent", Value: 42, Site: "s1", Node: "n1", Layer: "host",
			Kind: streams.KindMetric, ID: fmt.Sprintf("n1.%s.%d", prefix, i), TS: time.Now().UTC()}
		data, _ := json.Marshal(m)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := site.Publish(ctx, m.Subject(), data); err != nil {
			return err
		}
		if !strings.Contains(out.String(), `"id":"n1.`+prefix+`.`) {
			return fmt.Errorf("tail printed no metric %s.* yet (%d lines)", prefix, out.Count("\n"))
		}
		return nil
	})
}

// TestTelemetryTailFailsWhenHubDies: `alpha telemetry tail` of a hub that
// is shut down for good returns an error naming the stream it read, once
// its reconnects run out (30 to 60 s), instead of waiting silently for
// ever.
func TestTelemetryTailFailsWhenHubDies(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	out, done := ocTail(t, p)
	ocSeen(t, p.LeafJetStream(l), out, "before")
	p.Hub.Shutdown()
	check.FailsNaming(t, done, 2*time.Minute, "telemetry tail of a hub that died", "reading hub stream")
}

// TestTelemetryTailResumesAfterHubRestart: a tail goes on printing what
// reaches the hub after the hub restarted (same store and ports).
func TestTelemetryTailResumesAfterHubRestart(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	site := p.LeafJetStream(l)
	out, done := ocTail(t, p)
	ocSeen(t, site, out, "before")
	p.Restart()
	ocSeen(t, site, out, "after")
	select {
	case err := <-done:
		t.Fatalf("telemetry tail ended across a hub restart: %v", err)
	default:
	}
}

// TestLogsFollowAcrossHubRestart: `alpha logs -f` goes on printing the
// lines that reach the hub after it restarted (same store and ports), and
// fails naming the LOGS stream once the hub is gone for good.
func TestLogsFollowAcrossHubRestart(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	site := p.LeafJetStream(l)
	out := &check.Buffer{}
	logsOut = out
	ctx, cancel := context.WithCancel(context.Background())
	done, finished := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(finished)
		done <- runLogs(ctx, []string{"--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
			"--tls-ca", p.PKI.CA, "--site", "s1", "--node", "n1", "-f"})
	}()
	t.Cleanup(func() {
		cancel()
		<-finished
		logsOut = nil
	})
	seen := func(prefix string) {
		t.Helper()
		i := 0
		check.For(t, 60*time.Second, 300*time.Millisecond, func() error {
			i++
			line := streams.LogLine{TS: time.Now().UTC(), Site: "s1", Node: "n1", Kind: streams.LogUnit, Source: "meter.service",
				Level: "info", Text: fmt.Sprintf("%s %d", prefix, i), ID: fmt.Sprintf("n1.%s.%d", prefix, i)}
			data, _ := json.Marshal(line)
			pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer pcancel()
			if _, err := site.Publish(pctx, line.Subject(), data); err != nil {
				return err
			}
			if !strings.Contains(out.String(), " "+prefix+" ") {
				return fmt.Errorf("alpha logs -f printed no %q line yet (%d lines)", prefix, out.Count("\n"))
			}
			return nil
		})
	}
	seen("before")
	p.Restart()
	seen("after")
	select {
	case err := <-done:
		t.Fatalf("alpha logs -f ended across a hub restart: %v", err)
	default:
	}
	p.Hub.Shutdown()
	check.FailsNaming(t, done, 90*time.Second, "alpha logs -f of a hub gone for good", streams.LogsStream)
}
