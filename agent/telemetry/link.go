package telemetry

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// Link reports the site's uplink: whether the hub answers through the leaf,
// and how many telemetry and event messages wait at the site (the uplink
// consumers' pending counts).
type Link struct {
	Conn *nats.Conn // to the site leaf
	Site string
	// Timeout bounds the probe of the hub (default 1s).
	Timeout time.Duration
}

// Name is the layer.
func (Link) Name() string { return "link" }

// Collect probes the hub's JetStream API across the leaf link and reads the
// uplink consumers' state from the site's own domain (which answers offline).
func (l Link) Collect(ctx context.Context) ([]streams.Metric, error) {
	to := l.Timeout
	if to <= 0 {
		to = time.Second
	}
	site, err := jetstream.NewWithDomain(l.Conn, l.Site)
	if err != nil {
		return nil, err
	}
	hub, err := jetstream.NewWithDomain(l.Conn, streams.HubDomain)
	if err != nil {
		return nil, err
	}
	connected := 0.0
	pctx, cancel := context.WithTimeout(ctx, to)
	if _, err := hub.AccountInfo(pctx); err == nil {
		connected = 1
	}
	cancel()
	out := []streams.Metric{{Name: "uplink.connected", Value: connected}}
	var firstErr error
	for _, name := range []string{streams.TelemetryStream, streams.EventsStream} {
		cctx, cancel := context.WithTimeout(ctx, to)
		c, err := site.PushConsumer(cctx, name, streams.UplinkConsumer(name))
		if err == nil {
			var info *jetstream.ConsumerInfo
			if info, err = c.Info(cctx); err == nil {
				out = append(out, streams.Metric{Name: "uplink.pending", Value: float64(info.NumPending + uint64(info.NumAckPending)),
					Labels: map[string]string{"stream": name}})
			}
		}
		cancel()
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return out, firstErr
}
