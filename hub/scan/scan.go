// Package scan reads a hub stream's messages under subject filters since a
// time, through a consumer that lives only as long as the read.
package scan

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
)

// Since calls fn with the messages of stream under filters from since on,
// in stream order, at most max of them (0: all). The consumer is deleted
// afterwards: pages and rule evaluations read every few seconds, and
// consumers left to the server's default 5 minutes of inactivity would pile
// up against the tenant's consumer limit.
func Since(ctx context.Context, js jetstream.JetStream, stream string, filters []string, since time.Time, max int, fn func(jetstream.Msg)) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	// Each FetchNoWait makes the consumer again, and takes no context:
	// bounded, a stream without a leader fails this read (the page or the
	// rule evaluation, which the next round retries) instead of blocking
	// its caller for good.
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    filters,
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		InactiveThreshold: 10 * time.Second, // if the delete below is lost
		MaxResetAttempts:  natsutil.ReadResets,
	})
	if err != nil {
		return fmt.Errorf("reading stream %s: %w", stream, err)
	}
	defer func() {
		if info := c.CachedInfo(); info != nil {
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			s.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	seen := 0
	var pending uint64 // after the last message read
	for max == 0 || seen < max {
		batch, err := c.FetchNoWait(500)
		if err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
			fn(m)
		}
		// A batch cut short by a hub that died ends like an empty one.
		if err := natsutil.BatchError(batch); err != nil {
			return fmt.Errorf("reading stream %s: %w", stream, err)
		}
		if n == 0 {
			if pending > 0 {
				// An empty batch while messages wait: the server stopped
				// answering (a hub shutting down answers nothing).
				return fmt.Errorf("reading stream %s: stopped with %d messages left", stream, pending)
			}
			return nil
		}
		seen += n
	}
	return nil
}
