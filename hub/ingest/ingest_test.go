package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/sites"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// hubConn starts a hub (its ingest serves the open account) and connects.
func hubConn(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := stack.Hub(t).Connect()
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return nc, js
}

// send is one forwarder request: records of stream as site.
func send(t *testing.T, nc *nats.Conn, site, stream string, recs ...streams.Record) streams.IngestReply {
	t.Helper()
	req := nats.NewMsg(streams.IngestSubject(site))
	req.Header.Set(streams.IngestStreamHeader, stream)
	for _, r := range recs {
		req.Data = streams.AppendRecord(req.Data, r)
	}
	m, err := nc.RequestMsg(req, 5*time.Second)
	check.NoError(t, err)
	var reply streams.IngestReply
	check.NoError(t, json.Unmarshal(m.Data, &reply))
	return reply
}

func metrics(site string, from, n, size int) []streams.Record {
	var out []streams.Record
	for i := from; i < from+n; i++ {
		out = append(out, streams.Record{Seq: uint64(i), Subject: fmt.Sprintf("telemetry.%s.n1.m%d", site, i),
			ID: fmt.Sprintf("%s-%d", site, i), Data: []byte(strings.Repeat("x", size))})
	}
	return out
}

// A site over its byte quota is told when to come back and nothing of the
// rest is stored; the next window takes it. Another site is not held.
func TestQuotaHoldsTheRestUntilTheWindowEnds(t *testing.T) {
	ctx := context.Background()
	nc, js := hubConn(t)
	q := streams.DefaultSiteQuota
	q.TelemetryBytes, q.Window = 3000, 2*time.Second
	check.NoError(t, leaf.RegisterSites(ctx, js, []string{"a"}, &q))
	// The ingest learns quotas by watching the bucket: probe until it
	// holds a batch back, then start in a fresh window.
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if r := send(t, nc, "a", streams.TelemetryStream, metrics("a", 100, 5, 1000)...); r.RetryAfter == 0 {
			return fmt.Errorf("quota not applied yet: %+v", r)
		}
		return nil
	})
	check.For(t, 5*time.Second, 100*time.Millisecond, func() error {
		if r := send(t, nc, "a", streams.TelemetryStream, metrics("a", 200, 1, 1000)...); r.Stored != 1 {
			return fmt.Errorf("waiting for the next window: %+v", r)
		}
		return nil
	})
	batch := metrics("a", 1, 5, 1000)
	r := send(t, nc, "a", streams.TelemetryStream, batch...)
	if r.Stored < 1 || r.Stored > 2 || r.RetryAfter <= 0 || r.RetryAfter > q.Window {
		t.Fatalf("over quota: %+v, want 2 stored (3000 bytes a window) and a retry within the window", r)
	}
	if again := send(t, nc, "a", streams.TelemetryStream, batch[r.Stored:]...); again.Stored != 0 || again.RetryAfter <= 0 {
		t.Fatalf("asked again in the same window: %+v", again)
	}
	if other := send(t, nc, "b", streams.TelemetryStream, metrics("b", 1, 5, 1000)...); other.Stored != 5 || other.RetryAfter != 0 {
		t.Fatalf("site b under the default quota: %+v", other)
	}
	s := stream(js, streams.TelemetryStream)
	for i, rec := range batch {
		_, err := s.GetLastMsgForSubject(ctx, rec.Subject)
		if stored := err == nil; stored != (i < r.Stored) {
			t.Errorf("record %d (%s) stored %v, the ingest answered %d stored", i, rec.Subject, stored, r.Stored)
		}
	}
	check.For(t, 5*time.Second, 100*time.Millisecond, func() error {
		if next := send(t, nc, "a", streams.TelemetryStream, batch[r.Stored:]...); next.Stored == 0 {
			return fmt.Errorf("next window: %+v", next)
		}
		return nil
	})
}

// Status values of keys beyond the site's key quota are dropped; its own
// keys keep updating; an operation other than a status delete is dropped.
func TestStatusKeyQuotaAndOperations(t *testing.T) {
	ctx := context.Background()
	nc, js := hubConn(t)
	q := streams.DefaultSiteQuota
	q.StatusKeys, q.TelemetryBytes = 2, 1
	check.NoError(t, leaf.RegisterSites(ctx, js, []string{"a"}, &q))
	kv, err := js.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	// The ingest has the quota once a second metric in a window waits.
	check.For(t, 5*time.Second, 50*time.Millisecond, func() error {
		if r := send(t, nc, "a", streams.TelemetryStream, metrics("a", 1, 2, 10)...); r.RetryAfter == 0 {
			return fmt.Errorf("quota not applied yet: %+v", r)
		}
		return nil
	})
	var recs []streams.Record
	for i := range 3 {
		recs = append(recs, streams.Record{Seq: uint64(i + 1), Subject: fmt.Sprintf("$KV.status.a.n%d", i), Data: []byte("v1")})
	}
	check.Equal(t, send(t, nc, "a", streams.StatusStream, recs...).Stored, 3)
	r := send(t, nc, "a", streams.StatusStream,
		streams.Record{Seq: 4, Subject: "$KV.status.a.n0", Data: []byte("v2")},
		streams.Record{Seq: 5, Subject: "$KV.status.a.n3", Data: []byte("v2")},
		streams.Record{Seq: 6, Subject: "$KV.status.a.n1", Op: "PURGE"})
	check.Equal(t, r.Stored, 3)
	e, err := kv.Get(ctx, "a.n0")
	check.NoError(t, err)
	check.Equal(t, string(e.Value()), "v2")
	for _, k := range []string{"a.n1", "a.n2", "a.n3"} {
		if e, err := kv.Get(ctx, k); err == nil {
			t.Errorf("status %s = %q, want none (purged or over the key quota)", k, e.Value())
		}
	}
	// A purge of telemetry is not the site's to ask for.
	before, err := stream(js, streams.TelemetryStream).Info(ctx)
	check.NoError(t, err)
	check.Equal(t, send(t, nc, "a", streams.TelemetryStream, streams.Record{Seq: 9, Subject: "telemetry.a.n1.m1", ID: "p", Op: "PURGE"}).Stored, 1)
	after, err := stream(js, streams.TelemetryStream).Info(ctx)
	check.NoError(t, err)
	check.Equal(t, after.State.Msgs, before.State.Msgs)
	// Something the purge would have removed: how many metrics the quota
	// poll above stored before the quota took hold depends on timing (1 or
	// 2 under load: a CI run failed on "got 2, want 1").
	if after.State.Msgs == 0 {
		t.Fatal("telemetry empty: the purge had nothing to remove, so the test proves nothing")
	}
}

// The links answer says when the ingest last heard from each site; a
// registered site never heard from is there as never.
func TestLinksFromTheIngest(t *testing.T) {
	ctx := context.Background()
	nc, js := hubConn(t)
	check.NoError(t, leaf.RegisterSites(ctx, js, []string{"quiet", "talks"}, nil))
	send(t, nc, "talks", streams.StatusStream) // a heartbeat
	links, err := sites.Links(ctx, js)
	check.NoError(t, err)
	if d, ok := links["quiet"]; !ok || d >= 0 {
		t.Errorf("quiet: %v %v, want registered and never heard", d, ok)
	}
	if d, ok := links["talks"]; !ok || d < 0 || d > 5*time.Second {
		t.Errorf("talks: %v %v, want heard just now", d, ok)
	}
	// Bad requests name the problem.
	if r := send(t, nc, "talks", "NOPE"); !strings.Contains(r.Error, `"NOPE"`) {
		t.Errorf("unknown stream: %+v", r)
	}
}

func stream(js jetstream.JetStream, name string) jetstream.Stream {
	st, err := js.Stream(context.Background(), name)
	if err != nil {
		panic(err)
	}
	return st
}
