package telemetry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// spoolContent reads the spool file as the publisher writes it.
func spoolContent(t *testing.T, path string) (kept, metrics []streams.Metric, err error) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var sp struct{ Kept, Metrics []streams.Metric }
	check.NoError(t, json.Unmarshal(data, &sp))
	return sp.Kept, sp.Metrics, nil
}

func ids(ms []streams.Metric) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// The agent restarts while its leaf is down: health changes are on disk
// within about a second of being queued (what a crash would keep), the
// metrics join them when the publisher stops cleanly, and the next run
// delivers every one of them under its original id, then removes the spool.
func TestSpoolAcrossAgentRestart(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	s.leaf.Shutdown() // the leaf is unreachable for the first run
	s.leaf = nil
	file := filepath.Join(t.TempDir(), "telemetry-spool.json")

	nc, err := nats.Connect("nats://"+s.listen, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	check.NoError(t, err)
	defer nc.Close()
	p1, err := telemetry.NewPublisher(telemetry.PublisherConfig{Conn: nc, Site: "s1", Node: "n1", Log: quiet, BootID: "b1", SpoolFile: file})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p1.Run(ctx); close(done) }()
	for i := 1; i <= 3; i++ {
		p1.Publish(streams.Metric{Name: "health", Value: float64(i) / 10, Layer: "health", Kind: streams.KindHealth})
	}
	publishN(p1, 4, 8)

	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		kept, metrics, err := spoolContent(t, file)
		if err != nil {
			return err
		}
		if len(kept) != 3 || len(metrics) != 0 {
			return fmt.Errorf("spool while running: %d kept, %d metrics; want 3 and 0", len(kept), len(metrics))
		}
		return nil
	})
	cancel()
	<-done
	kept, metrics, err := spoolContent(t, file)
	check.NoError(t, err)
	if !slices.Equal(ids(kept), []string{"n1.b1.1", "n1.b1.2", "n1.b1.3"}) || len(metrics) != 5 {
		t.Fatalf("spool after a clean stop: kept %v, %d metrics; want 3 health changes and 5 metrics", ids(kept), len(metrics))
	}
	nc.Close()

	// The next run, with the leaf back.
	s.start()
	p2 := s.publisherWith("n1", telemetry.PublisherConfig{BootID: "b2", SpoolFile: file})
	p2.Publish(streams.Metric{Name: "test.seq", Value: 9, Layer: "host"})
	flush(t, p2)
	js, err := jetstream.NewWithDomain(s.siteConn(), "s1")
	check.NoError(t, err)
	ev := readAll(t, js, streams.EventsStream)
	check.Equal(t, fmt.Sprint(ids(ev)), "[n1.b1.1 n1.b1.2 n1.b1.3]")
	tel := readAll(t, js, streams.TelemetryStream)
	check.Equal(t, fmt.Sprint(ids(tel)), "[n1.b1.4 n1.b1.5 n1.b1.6 n1.b1.7 n1.b1.8 n1.b2.1]")
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool still there after everything was acked: %v", err)
		}
		return nil
	})
}

// A spool that is not JSON is reported and set aside; telemetry still runs.
func TestDamagedSpool(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	file := filepath.Join(t.TempDir(), "telemetry-spool.json")
	check.NoError(t, os.WriteFile(file, []byte("{not json"), 0o600))
	p := s.publisherWith("n1", telemetry.PublisherConfig{BootID: "b1", SpoolFile: file})
	publishN(p, 1, 3)
	flush(t, p)
	js, err := jetstream.NewWithDomain(s.siteConn(), "s1")
	check.NoError(t, err)
	exactly(t, readAll(t, js, streams.TelemetryStream), "n1", 3)
}
