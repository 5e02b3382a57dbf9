package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/streams"
)

// Link reports the site's uplink as the site leaf tells it (streams.LinkSubject):
// whether the link to the hub is up, and how many telemetry and event
// messages wait at the site. The leaf answers offline too.
type Link struct {
	Conn *nats.Conn // to the site leaf
	Site string
	// Timeout bounds the request (default 1s).
	Timeout time.Duration
}

// Name is the layer.
func (Link) Name() string { return "link" }

// Collect asks the leaf.
func (l Link) Collect(ctx context.Context) ([]streams.Metric, error) {
	to := l.Timeout
	if to <= 0 {
		to = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	m, err := l.Conn.RequestWithContext(ctx, streams.LinkSubject(l.Site), nil)
	if err != nil {
		return nil, fmt.Errorf("link state from the site leaf: %w", err)
	}
	var info streams.LinkInfo
	if err := json.Unmarshal(m.Data, &info); err != nil {
		return nil, fmt.Errorf("link state from the site leaf: %w", err)
	}
	connected := 0.0
	if info.Connected {
		connected = 1
	}
	out := []streams.Metric{{Name: "uplink.connected", Value: connected}}
	for _, name := range slices.Sorted(maps.Keys(info.Pending)) {
		out = append(out, streams.Metric{Name: "uplink.pending", Value: float64(info.Pending[name]),
			Labels: map[string]string{"stream": name}})
	}
	return out, nil
}
