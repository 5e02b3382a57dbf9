package redteam

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// srcFlood publishes n messages of size bytes on subjects made by subj,
// checking every ack, and returns how long it took.
func srcFlood(t testing.TB, js jetstream.JetStream, n, size int, subj func(int) string) time.Duration {
	t.Helper()
	payload := []byte(strings.Repeat("f", size))
	start := time.Now()
	for i := 0; i < n; {
		batch := min(1000, n-i)
		for j := range batch {
			if _, err := js.PublishAsync(subj(i+j), payload); err != nil {
				t.Fatalf("flood publish %d: %v", i+j, err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatalf("flood: batch at %d not acknowledged", i)
		}
		i += batch
	}
	return time.Since(start)
}

func srcStreamState(t testing.TB, js jetstream.JetStream, name string) jetstream.StreamState {
	t.Helper()
	s, err := js.Stream(context.Background(), name)
	check.NoError(t, err)
	info, err := s.Info(context.Background())
	check.NoError(t, err)
	return info.State
}

// Finding 4: a rogue site floods telemetry (20,000 x 1 KB, unique
// subjects of its own) and invents status keys of its own site. The hub
// keeps at most the site's quota of it, the tenant's store stays bounded,
// and another site's telemetry still arrives.
func TestRogueSiteFloodIsBounded(t *testing.T) {
	ctx := context.Background()
	e := srcNewEnv(t, "t1")
	const quotaBytes = 4 << 20
	quota := streams.DefaultSiteQuota
	quota.TelemetryBytes, quota.StatusKeys = quotaBytes, 50
	bundle1 := e.addSite("s1", "t1", &quota, "n1")
	bundle2 := e.addSite("s2", "t1", nil, "n1")
	_, hjs := e.admin("t1")
	_, s1 := e.startLeaf(bundle1)
	_, s2 := e.startLeaf(bundle2)

	took := srcFlood(t, s1, 20000, 1024, func(i int) string { return fmt.Sprintf("telemetry.s1.n1.flood.m%d", i) })
	t.Logf("flood of 20000 x 1 KB stored at the rogue site in %v", took)
	st, err := s1.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	_, err = st.Put(ctx, "s1.n1", []byte(`{"phase":"Converged","note":"own-s1"}`))
	check.NoError(t, err)
	for i := range 300 {
		_, err := st.Put(ctx, fmt.Sprintf("s1.fake-%d", i), []byte(`{"phase":"Converged"}`))
		check.NoError(t, err)
	}

	// The rogue site's quota fills up: the flood really reached the hub.
	check.For(t, 30*time.Second, 200*time.Millisecond, func() error {
		if b := srcStreamState(t, hjs, streams.TelemetryStream).Bytes; b < quotaBytes*3/4 {
			return fmt.Errorf("hub TELEMETRY holds %d bytes, the rogue's quota %d", b, quotaBytes)
		}
		return nil
	})
	// Another site's telemetry still arrives and is stored.
	_, err = s2.Publish(ctx, "telemetry.s2.n1.host.cpu", []byte(`{"value":7,"note":"victim-s2"}`))
	check.NoError(t, err)
	srcStreamHolds(t, hjs, streams.TelemetryStream, "telemetry.s2.n1.host.cpu", "victim-s2")

	// The ingest stops the rogue at its quota for this window (10 min,
	// longer than this test), so the hub's TELEMETRY never holds more of
	// the flood than that.
	agg := srcStreamState(t, hjs, streams.TelemetryStream)
	ai, err := hjs.AccountInfo(ctx)
	check.NoError(t, err)
	t.Logf("hub: TELEMETRY %d msgs %d bytes; tenant store %d bytes (reserved %d)", agg.Msgs, agg.Bytes, ai.Store, ai.ReservedStore)
	// Subjects and a little framing count beside the 1 KB payloads.
	if agg.Bytes > quotaBytes*5/4 {
		t.Errorf("hub TELEMETRY holds %d bytes after the flood, the rogue site's quota is %d", agg.Bytes, quotaBytes)
	}
	// Everything the tenant stores at the hub: the flood's share and
	// little else.
	if ai.Store > 2*quotaBytes {
		t.Errorf("tenant stores %d bytes at the hub after a 20 MB flood; its share is bounded by %d", ai.Store, quotaBytes)
	}
	// The site keeps what the hub did not take: nothing is lost, it waits.
	if n := srcStreamState(t, s1, streams.TelemetryStream).Msgs; n != 20000 {
		t.Errorf("rogue site's own TELEMETRY holds %d of 20000", n)
	}

	// Status: the site's own node and at most its key quota in all; the
	// ingest drops values of keys beyond it.
	srcStreamHolds(t, hjs, streams.StatusStream, "$KV.status.s1.n1", "own-s1")
	hst, err := hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 200*time.Millisecond, func() error {
		lister, err := hst.ListKeys(ctx)
		if err != nil {
			return err
		}
		keys := 0
		for k := range lister.Keys() {
			if strings.HasPrefix(k, "s1.") {
				keys++
			}
		}
		if keys > int(quota.StatusKeys) {
			t.Fatalf("hub holds %d status keys of s1, its quota is %d", keys, quota.StatusKeys)
		}
		if keys < int(quota.StatusKeys) {
			return fmt.Errorf("hub holds %d of s1's status keys, its quota %d", keys, quota.StatusKeys)
		}
		return nil
	})
}

// The quota delays a site, it never loses its data: a backlog three times
// the quota reaches the hub whole, one window at a time, each message once.
func TestQuotaDelaysNeverLoses(t *testing.T) {
	e := srcNewEnv(t, "t1")
	quota := streams.DefaultSiteQuota
	quota.TelemetryBytes, quota.Window = 1<<20, 3*time.Second
	bundle := e.addSite("s1", "t1", &quota, "n1")
	_, hjs := e.admin("t1")
	_, s1 := e.startLeaf(bundle)

	const n = 3000 // 3000 x 1 KB: about three windows' worth
	srcFlood(t, s1, n, 1024, func(i int) string { return fmt.Sprintf("telemetry.s1.n1.backlog.m%d", i) })
	check.For(t, 90*time.Second, 250*time.Millisecond, func() error {
		if got := srcStreamState(t, hjs, streams.TelemetryStream).Msgs; got < n {
			return fmt.Errorf("hub TELEMETRY holds %d of the site's %d", got, n)
		}
		return nil
	})
	if got, subjects := srcScan(t, hjs, streams.TelemetryStream, "fff"); got != n {
		t.Fatalf("hub TELEMETRY holds %d flood messages (want exactly %d, no duplicates): %d subjects", got, n, len(subjects))
	}
}
