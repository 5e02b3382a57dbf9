package events_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	_, js := p.Admin("acme")
	ctx := context.Background()
	prodtest.FillStream(t, js, "OCEVENTS", events.Subject("s1", "n1"), 50000, func(i int) []byte {
		data, _ := json.Marshal(events.Event{ID: fmt.Sprintf("oc.%d", i), Site: "s1", Node: "n1"})
		return data
	})

	done := make(chan error, 1)
	go func() {
		_, err := events.Recent(ctx, js, "OCEVENTS", "s1", "n1", time.Now().Add(-time.Hour), 0)
		done <- err
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
	check.FailsNaming(t, done, 2*time.Minute, "events.Recent from a hub that died mid-read", "OCEVENTS")
}
