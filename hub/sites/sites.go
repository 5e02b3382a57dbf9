// Package sites tells how the hub hears from each site: how long ago its
// uplink last delivered anything, idle heartbeats included.
package sites

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// StaleAfter is the silence after which a site counts as stale. An idle
// site's forwarder calls on the hub's ingest every 3 s and agents report
// every StatusHeartbeat, so this much silence means the link is down.
const StaleAfter = 10 * time.Second

// Links returns, per site registered at the hub (it has mirror consumers)
// or heard from, how long ago the hub's ingest last heard from it; a
// negative duration means never. Every ingest of a hub cluster answers for
// the sites linked to it; the latest word wins.
func Links(ctx context.Context, js jetstream.JetStream) (map[string]time.Duration, error) {
	out := map[string]time.Duration{}
	bp, err := js.Stream(ctx, streams.Store{Bucket: streams.BlueprintsBucket}.Stream())
	if err != nil {
		return out, err
	}
	names := bp.ConsumerNames(ctx)
	for name := range names.Name() {
		if site, ok := strings.CutPrefix(name, streams.MirrorConsumer("")); ok {
			if site, ok = strings.CutSuffix(site, "-"+streams.BlueprintsBucket); ok {
				out[site] = -1
			}
		}
	}
	if err := names.Err(); err != nil {
		return out, err
	}
	heard, err := heardFrom(ctx, js.Conn())
	now := time.Now()
	for site, at := range heard {
		out[site] = max(now.Sub(at), 0)
	}
	return out, err
}

// heardFrom asks every ingest when it last heard from each site: it
// takes answers until none came for a moment after the first.
func heardFrom(ctx context.Context, nc *nats.Conn) (map[string]time.Time, error) {
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest(streams.LinksSubject, inbox, nil); err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	wait := 2 * time.Second // the first answer
	for {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			return out, nil // no more answers
		}
		var got map[string]time.Time
		if json.Unmarshal(m.Data, &got) == nil {
			for site, at := range got {
				if at.After(out[site]) {
					out[site] = at
				}
			}
		}
		wait = 50 * time.Millisecond // the other members of a cluster
	}
}

// Stale says whether a site last heard from active ago is stale.
func Stale(active time.Duration) bool { return active < 0 || active > StaleAfter }
