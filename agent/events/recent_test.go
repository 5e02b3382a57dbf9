package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/events"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
)

// TestRecentFailsWhenHubDiesMidRead: `alpha status`'s read of a node's
// drift events from a hub that is shut down mid-read returns an error
// naming the stream, instead of blocking in nats.go's endless remaking of
// the ordered consumer.
func TestRecentFailsWhenHubDiesMidRead(t *testing.T) {
	const n = 50000
	// The read (500 batches) can finish before a loaded machine's hub has
	// stopped serving: then nothing was cut and the run says nothing, so
	// it is run again on a fresh hub (CI saw one such run in many).
	for attempt := 1; ; attempt++ {
		got, took, err := readWhileHubDies(t, n)
		if err == nil && got == n && attempt < 3 {
			t.Logf("attempt %d: the whole read (%d events) finished before the hub stopped; again", attempt, got)
			continue
		}
		if err == nil || !strings.Contains(err.Error(), "OCEVENTS") {
			t.Fatalf("events.Recent from a hub that died mid-read returned %d events and %v after %v, want an error naming OCEVENTS", got, err, took)
		}
		t.Logf("events.Recent failed %v after the hub's shutdown, with %d of %d events read: %v", took, got, n, err)
		return
	}
}

// readWhileHubDies fills a stream on a fresh hub, starts events.Recent on
// it and shuts the hub down once the read is under way.
func readWhileHubDies(t *testing.T, n int) (int, time.Duration, error) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	_, js := p.Admin("acme")
	ctx := context.Background()
	prodtest.FillStream(t, js, "OCEVENTS", events.Subject("s1", "n1"), n, func(i int) []byte {
		data, _ := json.Marshal(events.Event{ID: fmt.Sprintf("oc.%d", i), Site: "s1", Node: "n1"})
		return data
	})
	type result struct {
		got int
		err error
	}
	done := make(chan result, 1)
	go func() {
		evs, err := events.Recent(ctx, js, "OCEVENTS", "s1", "n1", time.Now().Add(-time.Hour), 0)
		done <- result{len(evs), err}
	}()
	// Recent reads 100 events a time, each time through a consumer made
	// again: 500 reads, under way once there is a consumer.
	s, err := js.Stream(ctx, "OCEVENTS")
	check.NoError(t, err)
	check.For(t, 30*time.Second, 5*time.Millisecond, func() error {
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Consumers == 0 {
			return fmt.Errorf("no consumer on OCEVENTS yet")
		}
		return nil
	})
	p.Hub.Shutdown()
	start := time.Now()
	select {
	case r := <-done:
		return r.got, time.Since(start), r.err
	case <-time.After(2 * time.Minute):
		t.Fatal("events.Recent still running 2 min after the hub's shutdown")
		return 0, 0, nil
	}
}
