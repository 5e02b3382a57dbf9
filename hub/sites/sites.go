// Package sites tells how the hub hears from each site: how long ago its
// uplink last delivered anything, idle heartbeats included.
package sites

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// StaleAfter is the silence after which a site counts as stale. The uplink
// consumers send idle heartbeats every second and agents report every
// StatusHeartbeat, so this much silence means the link is down.
const StaleAfter = 10 * time.Second

// Links returns, per site registered at the hub, how long ago the hub last
// heard from it; a negative duration means never. It reads the sources of
// the status stream: a site's landing stream, whose own source is the site,
// or (a hub registered before landing streams) the site itself.
func Links(ctx context.Context, js jetstream.JetStream) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	s, err := js.Stream(ctx, streams.StatusStream)
	if err != nil {
		return out, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return out, err
	}
	landing := streams.LandingStream(streams.StatusStream, "")
	for _, src := range info.Sources {
		if site, ok := strings.CutPrefix(src.Name, landing); ok && src.External == nil {
			ls, err := js.Stream(ctx, src.Name)
			if err != nil {
				continue
			}
			li, err := ls.Info(ctx)
			if err != nil {
				continue
			}
			for _, up := range li.Sources {
				if up.External != nil {
					out[site] = up.Active
				}
			}
			continue
		}
		if src.External != nil {
			out[streams.DomainOfAPIPrefix(src.External.APIPrefix)] = src.Active
		}
	}
	return out, nil
}

// Stale says whether a site last heard from active ago is stale.
func Stale(active time.Duration) bool { return active < 0 || active > StaleAfter }
