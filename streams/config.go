package streams

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// More names.
const (
	EventsStream = "EVENTS"
	CloudBucket  = "cloud"
	// StatusStream is the stream behind the status bucket.
	StatusStream = "KV_" + StatusBucket
)

// EventsSubjects is the subject filter of a site's events (drift, holds,
// remediation decisions).
func EventsSubjects(site string) string { return "events." + site + ".>" }

// Uplinks are the site streams that flow up to same-named hub streams.
func Uplinks() []string { return []string{StatusStream, TelemetryStream, EventsStream} }

// HubUplinkConfig is the hub side of an uplink: no subjects of its own (a hub
// stream listening on the subjects would also capture the leaves' publishes
// straight across the leaf link, a second path that duplicates or, for
// status, reorders), sources added per site.
func HubUplinkConfig(name string, replicas int) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:      name,
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, // never WorkQueue/Interest across an unreliable link
		Replicas:  replicas,
		// The server would default subjects to the stream name; give it one
		// nobody publishes to.
		Subjects: []string{"alpha.hub.none." + name},
	}
	switch name {
	case StatusStream:
		// Shaped like a KV bucket so `nats kv get status <site>.<node>` works.
		cfg.Description = "node status from every site (sourced)"
		cfg.MaxMsgsPerSubject = 1
		cfg.AllowDirect = true
		cfg.AllowRollup = true
		cfg.DenyDelete = true
		cfg.Discard = jetstream.DiscardNew
	case TelemetryStream:
		cfg.Description = "telemetry from every site (sourced)"
		cfg.MaxAge = 30 * 24 * time.Hour
		cfg.Duplicates = 10 * time.Minute
	case EventsStream:
		cfg.Description = "drift, hold and remediation events from every site (sourced)"
		cfg.MaxAge = 90 * 24 * time.Hour
		cfg.Duplicates = 10 * time.Minute
	}
	return cfg
}

// SiteLimits bounds the site's telemetry buffer. Metrics (TELEMETRY) and
// health changes and events (EVENTS) have separate limits, so a full metrics
// buffer drops its oldest metrics and never an event.
type SiteLimits struct {
	MaxAge   time.Duration
	MaxBytes int64
	// EventsMaxBytes bounds the EVENTS stream (0: no byte limit).
	EventsMaxBytes int64
}

// DefaultSiteLimits keep a week or 1 GiB of metrics and 30 days or 256 MiB of
// events at a site.
var DefaultSiteLimits = SiteLimits{MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, EventsMaxBytes: 256 << 20}

// SiteStreamConfig is the site side of an uplink stream (status is a KV
// bucket created through the KV API instead).
func SiteStreamConfig(name, site string, lim SiteLimits) jetstream.StreamConfig {
	cfg := jetstream.StreamConfig{
		Name:       name,
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Discard:    jetstream.DiscardOld,
		Duplicates: 10 * time.Minute,
	}
	switch name {
	case TelemetryStream:
		cfg.Subjects = []string{TelemetrySubjects(site)}
		cfg.MaxAge, cfg.MaxBytes = lim.MaxAge, lim.MaxBytes
	case EventsStream:
		cfg.Subjects = []string{EventsSubjects(site)}
		cfg.MaxAge = 30 * 24 * time.Hour
		if lim.EventsMaxBytes > 0 {
			cfg.MaxBytes = lim.EventsMaxBytes
		}
	}
	return cfg
}

// UplinkConsumerConfig is the durable push consumer on a site stream that the
// hub sources through. Flow-control acks let it resume where it stopped.
func UplinkConsumerConfig(site, stream string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        UplinkConsumer(stream),
		DeliverSubject: UplinkDeliver(site, stream),
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  time.Second,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
}

// MirrorConsumerConfig is the durable push consumer on a hub store that a
// site's mirror of it binds to; for a KV bucket filtered to the site's keys
// so other sites' blueprints never leave the hub.
func MirrorConsumerConfig(site string, st Store) jetstream.ConsumerConfig {
	filter := KVSubjects(st.Bucket, site)
	if st.Object {
		filter = ""
	}
	return jetstream.ConsumerConfig{
		Durable:        MirrorConsumer(site) + "-" + st.Bucket,
		DeliverSubject: MirrorDeliver(site) + "." + st.Bucket,
		AckPolicy:      jetstream.AckFlowControlPolicy,
		FlowControl:    true,
		IdleHeartbeat:  time.Second,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		FilterSubject:  filter,
	}
}
