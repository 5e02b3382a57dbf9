package streams

import (
	"strings"
	"time"
)

// Kinds of telemetry message. Metrics are samples that may be thinned when a
// site's buffer is full; health changes and events never are, so they travel
// in the EVENTS stream, whose limits are separate from TELEMETRY's.
const (
	KindMetric = "metric"
	KindHealth = "health"
	KindEvent  = "event"
)

// Metric is the one normalized telemetry message of every layer (host,
// sensors, network, units, containers, link, agent, health, remediation).
type Metric struct {
	Name   string            `json:"name"`
	Value  float64           `json:"value"`
	Unit   string            `json:"unit,omitempty"`
	TS     time.Time         `json:"ts"`
	Site   string            `json:"site"`
	Node   string            `json:"node"`
	Layer  string            `json:"layer"`
	Labels map[string]string `json:"labels,omitempty"`
	Kind   string            `json:"kind"`
	// Text carries an event's reason or a health change's cause.
	Text string `json:"text,omitempty"`
	// ID is the stable message id (also the Nats-Msg-Id header): node, boot
	// id and sequence, so a retried publish is dropped by the stream's
	// duplicate window instead of stored twice.
	ID string `json:"id"`
}

// Subject is where m is published: telemetry.<site>.<node>.<layer>.<name>
// for metrics, events.<site>.<node>.<layer>.<name> for health and events.
// The name's dots stay subject tokens so `telemetry.*.*.host.cpu.>` works.
func (m Metric) Subject() string {
	root := "telemetry"
	if m.Kind == KindHealth || m.Kind == KindEvent {
		root = "events"
	}
	return root + "." + Token(m.Site) + "." + Token(m.Node) + "." + Token(m.Layer) + "." + nameTokens(m.Name)
}

// Token makes s one safe subject token: characters NATS gives meaning to
// (. * > and whitespace) become _, an empty token becomes _.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f:
			return '_'
		}
		return r
	}, s)
}

func nameTokens(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = Token(p)
	}
	return strings.Join(parts, ".")
}

// TelemetryFilter is the subject filter for telemetry at the hub, narrowed to
// a site and node when given ("" means all).
func TelemetryFilter(root, site, node string) string {
	s, n := "*", "*"
	if site != "" {
		s = Token(site)
	}
	if node != "" {
		n = Token(node)
	}
	return root + "." + s + "." + n + ".>"
}
