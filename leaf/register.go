package leaf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// RegisterSites puts what the hub keeps per site in place: the durable
// mirror consumers on the hub's stores (filtered to the site's keys) that
// the site's mirrors bind to, and, with quota, the site's quota in the
// hub's quotas bucket (nil leaves an existing one alone; a site without one
// has the defaults). Nothing else at the hub is per site: the uplink goes
// through the hub's ingest (streams.IngestSubject). Idempotent.
func RegisterSites(ctx context.Context, hub jetstream.JetStream, sites []string, quota *streams.SiteQuota) error {
	for _, site := range sites {
		for _, st := range streams.Mirrored() {
			cc := streams.MirrorConsumerConfig(site, st)
			if _, err := hub.PushConsumer(ctx, st.Stream(), cc.Durable); err == nil {
				continue
			}
			if _, err := hub.CreateOrUpdateConsumer(ctx, st.Stream(), cc); err != nil {
				return fmt.Errorf("site %s: mirror consumer %s on hub %s: %w", site, cc.Durable, st.Bucket, err)
			}
		}
	}
	if quota == nil {
		return nil
	}
	if err := quota.Validate(); err != nil {
		return err
	}
	kv, err := hub.KeyValue(ctx, streams.QuotasBucket)
	if err != nil {
		return fmt.Errorf("hub bucket %s: %w", streams.QuotasBucket, err)
	}
	b, _ := json.Marshal(quota)
	for _, site := range sites {
		if e, err := kv.Get(ctx, site); err == nil && bytes.Equal(e.Value(), b) {
			continue
		}
		if _, err := kv.Put(ctx, site, b); err != nil {
			return fmt.Errorf("site %s: quota: %w", site, err)
		}
	}
	return nil
}

// Upgrade removes what hubs before the ingest kept per site for the
// uplink: the sources of the hub's uplink streams that took a site's
// stream straight or through its landing stream, and the landing streams
// (what they held had been copied on). Sources of air-gap bundle streams
// stay. It returns the sites it found. Idempotent.
//
// Sites whose leaf still runs the old version keep their uplink at the
// site until it is upgraded: nothing is lost, it waits.
func Upgrade(ctx context.Context, hub jetstream.JetStream) ([]string, error) {
	seen := map[string]bool{}
	var sites []string
	note := func(site string) {
		if !seen[site] {
			seen[site] = true
			sites = append(sites, site)
		}
	}
	for _, name := range streams.Uplinks() {
		s, err := hub.Stream(ctx, name)
		if err != nil {
			return sites, fmt.Errorf("hub stream %s: %w", name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return sites, err
		}
		landing := streams.LandingStream(name, "")
		var keep []*jetstream.StreamSource
		for _, src := range info.Config.Sources {
			switch {
			case src.External != nil && streams.ValidID("site", streams.DomainOfAPIPrefix(src.External.APIPrefix)) == nil:
				note(streams.DomainOfAPIPrefix(src.External.APIPrefix))
			case src.External == nil && strings.HasPrefix(src.Name, landing):
				note(strings.TrimPrefix(src.Name, landing))
			default:
				keep = append(keep, src)
			}
		}
		if len(keep) != len(info.Config.Sources) {
			cfg := info.Config
			cfg.Sources = keep
			if _, err := hub.UpdateStream(ctx, cfg); err != nil && !errors.Is(err, jetstream.ErrStreamSourceNotSupported) {
				return sites, fmt.Errorf("hub stream %s: removing site sources: %w", name, err)
			}
		}
	}
	for _, site := range sites {
		for _, name := range streams.Uplinks() {
			if err := hub.DeleteStream(ctx, streams.LandingStream(name, site)); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return sites, fmt.Errorf("deleting landing stream %s: %w", streams.LandingStream(name, site), err)
			}
		}
	}
	return sites, nil
}
