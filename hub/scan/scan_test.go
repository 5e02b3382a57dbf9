package scan

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
)

// TestSinceFailsWhenHubDiesMidRead: a read of many messages from a hub
// that is shut down mid-read returns an error naming the stream, instead of
// blocking its caller (a page, a rule evaluation) in nats.go's endless
// remaking of the ordered consumer.
func TestSinceFailsWhenHubDiesMidRead(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	_, js := p.Admin("acme")
	prodtest.FillStream(t, js, "OCSCAN", "ocscan.x", 20000, func(int) []byte { return []byte("x") })

	died := make(chan struct{})
	done := make(chan error, 1)
	seen := 0
	go func() {
		done <- Since(context.Background(), js, "OCSCAN", []string{"ocscan.>"}, time.Now().Add(-time.Hour), 0, func(jetstream.Msg) {
			seen++
			if seen == 600 { // into the second batch of 500
				p.Hub.Shutdown()
				close(died)
			}
		})
	}()
	select {
	case <-died:
	case err := <-done:
		t.Fatalf("Since returned %v after %d messages, before the hub died", err, seen)
	}
	check.FailsNaming(t, done, 2*time.Minute, "scan.Since from a hub that died mid-read", "OCSCAN")
}
