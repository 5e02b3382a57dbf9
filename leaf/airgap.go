package leaf

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// BundleStoreDescription marks a store an air-gapped leaf made for
// `alpha bundle import` to fill; the bundle importer refuses any other
// (a mirror cannot be written at the site).
const BundleStoreDescription = "filled by signed bundles (air-gapped site)"

// createBundleStore makes the plain store an air-gapped site keeps in place
// of its mirror of st: same bucket, same keys, written by the bundle
// importer. Its revisions are the site's own; the importer writes each key
// only forward and in the hub's order, so every revision it creates is at
// most the hub's revision of the same value, and converting to a mirror
// later (convertBundleStores) never moves a key's revision back.
func createBundleStore(ctx context.Context, js jetstream.JetStream, st streams.Store) error {
	if st.Object {
		_, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: st.Bucket,
			Description: BundleStoreDescription, Storage: jetstream.FileStorage})
		if errors.Is(err, jetstream.ErrBucketExists) {
			err = nil
		}
		return err
	}
	_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: st.Bucket, History: streams.BlueprintHistory,
		Storage: jetstream.FileStorage, Description: BundleStoreDescription})
	if errors.Is(err, jetstream.ErrBucketExists) {
		err = nil
	}
	return err
}

// convertBundleStores replaces, once the uplink is up, every store that
// bundles filled while the site was air-gapped with the hub's mirror (a
// stream cannot become a mirror in place). The hub's durable mirror
// consumer has delivered nothing to this site yet, so the new mirror
// receives every revision the hub still holds of the site's keys, at the
// hub's revisions, which are never below the bundle-made ones; agents see
// the same signed values again (accepted as already seen) or newer ones.
// Done only while connected: the site is without its stores for the
// moment the mirror needs to catch up, never for the length of an outage.
func (l *Leaf) convertBundleStores(ctx context.Context, log *slog.Logger) error {
	if l.AirGapped() {
		return nil
	}
	for _, st := range streams.Mirrored() {
		s, err := l.js.Stream(ctx, st.Stream())
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			// A conversion cut short between delete and create.
			if err := l.createMirror(ctx, st); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("leaf: store %s: %w", st.Bucket, err)
		}
		if s.CachedInfo().Config.Mirror != nil {
			continue
		}
		log.Info("uplink up: the bundle-filled store becomes the hub's mirror", "store", st.Bucket,
			"messages", s.CachedInfo().State.Msgs)
		if err := l.js.DeleteStream(ctx, st.Stream()); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("leaf: replacing bundle store %s: %w", st.Bucket, err)
		}
		if err := l.createMirror(ctx, st); err != nil {
			return err
		}
	}
	return nil
}

// AddSource makes the hub stream name source src (a stream of the hub's
// own, such as an uplink bundle's), unless it already sources a stream of
// that name.
func AddSource(ctx context.Context, hub jetstream.JetStream, name string, src *jetstream.StreamSource) error {
	return updateSources(ctx, hub, name, func(have []*jetstream.StreamSource) ([]*jetstream.StreamSource, bool) {
		for _, h := range have {
			if h.External == nil && h.Name == src.Name {
				return have, false
			}
		}
		return append(have, src), true
	})
}

// updateSources rewrites stream's sources with fix until a read-back shows
// fix has nothing more to change. Stream updates are read-modify-writes
// another writer may race (the JetStream API has no compare-and-set for
// stream configs), so each is read back after a random pause.
func updateSources(ctx context.Context, hub jetstream.JetStream, stream string,
	fix func([]*jetstream.StreamSource) ([]*jetstream.StreamSource, bool)) error {
	for attempt := 0; ; attempt++ {
		s, err := hub.Stream(ctx, stream)
		if err != nil {
			return fmt.Errorf("hub stream %s: %w", stream, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		srcs, changed := fix(info.Config.Sources)
		if !changed {
			return nil // as wanted, possibly verified after our own write
		}
		if attempt >= 5 {
			return fmt.Errorf("sources of hub stream %s keep being overwritten", stream)
		}
		cfg := info.Config
		cfg.Sources = srcs
		// nats.go reports a reply whose source count differs from the
		// request as "sourcing not supported": with several writers at
		// once that is another's update landing beside ours, so read
		// again and verify rather than fail.
		if _, err := hub.UpdateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamSourceNotSupported) {
			return fmt.Errorf("updating sources of hub stream %s: %w", stream, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50*time.Millisecond + time.Duration(rand.Int64N(int64(250*time.Millisecond)))):
		}
	}
}
