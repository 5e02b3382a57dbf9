package natsutil

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FollowKV calls fn with every entry of bucket, the current values first
// and then each change, until ctx ends. A watch that ends (the server
// restarted, the bucket was not there yet) is started again after a second,
// from the current values, so fn must accept seeing a value again.
func FollowKV(ctx context.Context, js jetstream.JetStream, bucket string, log *slog.Logger, fn func(jetstream.KeyValueEntry)) {
	for ctx.Err() == nil {
		err := followOnce(ctx, js, bucket, fn)
		if ctx.Err() != nil {
			return
		}
		log.Debug("watch ended; watching again", "bucket", bucket, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func followOnce(ctx context.Context, js jetstream.JetStream, bucket string, fn func(jetstream.KeyValueEntry)) error {
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch closed")
			}
			if e != nil {
				fn(e)
			}
		}
	}
}
