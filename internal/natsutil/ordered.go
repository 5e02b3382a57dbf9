package natsutil

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ReadResets is the MaxResetAttempts of an ordered consumer that serves a
// bounded read: a CLI command, a page, one rule evaluation. nats.go makes
// a broken ordered consumer again for ever by default (0 means unlimited),
// each try waiting up to 10 s for the server, and Fetch, FetchNoWait and a
// Messages iterator's Next do not look at any context while they do: a read
// from a hub that died, restarted or lost the stream's leader could block
// for good (the chaos harness hung 10 min in it). Three tries (10 s each
// at most, 1 s and 2 s apart) ride out a stream leader election and give
// up some 33 s after the break, so the read fails and says what it read.
const ReadResets = 3

// ListTimeout bounds ListKeys.
const ListTimeout = 30 * time.Second

// ListKeys lists kv's keys under filter (">" for all), within ListTimeout.
// nats.go's key lister waits for a server that died mid-listing until its
// context ends, and then closes its channel as if the listing were
// complete: a command would print part of the keys, or a bundle hold part
// of the values, without a word. Hence a deadline of its own, checked at
// the end.
func ListKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, ListTimeout)
	defer cancel()
	lister, err := kv.ListKeysFiltered(lctx, filter)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	if err := lctx.Err(); err != nil {
		return nil, fmt.Errorf("listing keys %s: not complete (%d keys so far): %w", filter, len(keys), err)
	}
	return keys, nil
}

// BatchError is why a fetched batch ended, nil when it simply ran out of
// messages: a batch cut short by a server that died ends its Messages
// like an empty one, and only Error tells them apart.
func BatchError(b jetstream.MessageBatch) error {
	err := b.Error()
	if err == nil || errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
		return nil
	}
	return err
}
