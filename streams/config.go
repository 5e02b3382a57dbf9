package streams

import (
	"errors"
	"fmt"
	"sort"
	"strings"
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

// SiteStreams are the plain streams a leaf keeps for its site (status is a
// KV bucket).
func SiteStreams() []string { return []string{TelemetryStream, EventsStream, LogsStream} }

// Uplinks are the site streams that flow up to same-named hub streams.
func Uplinks() []string { return []string{StatusStream, TelemetryStream, EventsStream, LogsStream} }

// HubUplinkConfig is the hub side of an uplink: no subjects of its own (a hub
// stream listening on the subjects would also capture the leaves' publishes
// straight across the leaf link, a second path that duplicates or, for
// status, reorders), one filtered source per site's landing stream
// (HubLandingConfig), and a byte limit: full, it drops its oldest messages,
// so a flood ages out history but never stops new messages from arriving.
func HubUplinkConfig(name string, replicas int, lim HubLimits) jetstream.StreamConfig {
	lim = lim.withDefaults()
	cfg := jetstream.StreamConfig{
		Name:      name,
		Storage:   jetstream.FileStorage,
		Retention: jetstream.LimitsPolicy, // never WorkQueue/Interest across an unreliable link
		Replicas:  replicas,
		// The server would default subjects to the stream name; give it one
		// nobody publishes to.
		Subjects: []string{"alpha.hub.none." + name},
		// DiscardNew on a sourced stream stalls every source once it is
		// full (the server retries the message that did not fit forever).
		Discard: jetstream.DiscardOld,
	}
	switch name {
	case StatusStream:
		// Shaped like a KV bucket so `nats kv get status <site>.<node>` works.
		cfg.Description = "node status from every site (sourced)"
		cfg.MaxMsgsPerSubject = 1
		cfg.AllowDirect = true
		cfg.AllowRollup = true
		cfg.DenyDelete = true
		cfg.MaxBytes = lim.StatusBytes
	case TelemetryStream:
		cfg.Description = "telemetry from every site (sourced)"
		cfg.MaxAge = 30 * 24 * time.Hour
		cfg.Duplicates = 10 * time.Minute
		cfg.MaxBytes = lim.TelemetryBytes
	case EventsStream:
		cfg.Description = "drift, hold and remediation events from every site (sourced), and the hub's alerts"
		// The hub's own alerts (hub/alerts); no site credential may publish there.
		cfg.Subjects = append(cfg.Subjects, AlertsRoot+".>")
		cfg.MaxAge = 90 * 24 * time.Hour
		cfg.Duplicates = 10 * time.Minute
		cfg.MaxBytes = lim.EventsBytes
	case LogsStream:
		cfg.Description = "journal and container lines from every site (sourced)"
		cfg.MaxAge = 30 * 24 * time.Hour
		cfg.Duplicates = 10 * time.Minute
		cfg.MaxBytes = lim.LogsBytes
	}
	return cfg
}

// HubLimits bound the hub's uplink streams of one tenant (bytes; 0: the
// default). The bytes are reserved against the tenant account's storage.
type HubLimits struct {
	TelemetryBytes int64
	EventsBytes    int64
	StatusBytes    int64
	// LogsBytes bounds LOGS (0: the default), apart from the others so
	// lines never push out metrics or events.
	LogsBytes int64
}

// DefaultHubLimits keep 1 GiB of telemetry, 256 MiB of events, 64 MiB of
// status and 256 MiB of logs per tenant at the hub.
var DefaultHubLimits = HubLimits{TelemetryBytes: 1 << 30, EventsBytes: 256 << 20, StatusBytes: 64 << 20, LogsBytes: 256 << 20}

// Validate names the first limit that is not positive.
func (l HubLimits) Validate() error {
	err := positive("hub limit", map[string]int64{"telemetry": l.TelemetryBytes, "events": l.EventsBytes, "status": l.StatusBytes})
	return errors.Join(err, notNegative("hub limit logs", l.LogsBytes))
}

// notNegative accepts 0 (the default) for limits added after a release, so
// configurations written before them stay valid.
func notNegative(what string, v int64) error {
	if v < 0 {
		return fmt.Errorf("%s %d must be positive (or 0 for the default)", what, v)
	}
	return nil
}

func positive(what string, fields map[string]int64) error {
	var bad []string
	for name, v := range fields {
		if v <= 0 {
			bad = append(bad, fmt.Sprintf("%s %s %d must be positive", what, name, v))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

func (l HubLimits) withDefaults() HubLimits {
	d := DefaultHubLimits
	if l.TelemetryBytes > 0 {
		d.TelemetryBytes = l.TelemetryBytes
	}
	if l.EventsBytes > 0 {
		d.EventsBytes = l.EventsBytes
	}
	if l.StatusBytes > 0 {
		d.StatusBytes = l.StatusBytes
	}
	if l.LogsBytes > 0 {
		d.LogsBytes = l.LogsBytes
	}
	return d
}

// LandingStream is the hub stream one site's uplink of stream name lands in
// before the hub copies the site's own subjects on to name.
func LandingStream(name, site string) string { return "UPLINK_" + name + "_" + site }

// UplinkSubjects are the only subjects of stream name the hub accepts from
// a site: its own status keys, telemetry or events.
func UplinkSubjects(name, site string) string {
	switch name {
	case StatusStream:
		return KVSubjects(StatusBucket, site)
	case EventsStream:
		return EventsSubjects(site)
	case LogsStream:
		return LogsSubjects(site)
	}
	return TelemetrySubjects(site)
}

// SiteQuota bounds what the hub takes from one site. A site's uplink lands
// in its own stream; full, that stream refuses new messages (DiscardNew),
// which stalls that site's uplink alone (the site buffers them) until old
// ones age out. So one site moves at most TelemetryBytes of telemetry and
// EventsBytes of events into the hub per Window, and holds at most
// StatusKeys status keys there.
type SiteQuota struct {
	TelemetryBytes int64
	EventsBytes    int64
	StatusKeys     int64
	StatusBytes    int64
	// LogsBytes of log lines per Window (0: the default); a site that logs
	// more waits at the site, it never takes telemetry's share.
	LogsBytes int64
	Window    time.Duration
}

// DefaultSiteQuota: 32 MiB of telemetry, 8 MiB of events and 8 MiB of log
// lines per 10 minutes (about 55 KB/s of telemetry, 14 KB/s of lines: a
// site that logs more catches up later), 4096 status keys in 4 MiB; 52 MiB
// reserved at the hub per site.
var DefaultSiteQuota = SiteQuota{TelemetryBytes: 32 << 20, EventsBytes: 8 << 20, StatusKeys: 4096, StatusBytes: 4 << 20,
	LogsBytes: 8 << 20, Window: 10 * time.Minute}

// Validate names every quota that is not positive.
func (q SiteQuota) Validate() error {
	err := positive("site quota", map[string]int64{"telemetry": q.TelemetryBytes, "events": q.EventsBytes,
		"status keys": q.StatusKeys, "status": q.StatusBytes, "window (ns)": int64(q.Window)})
	return errors.Join(err, notNegative("site quota logs", q.LogsBytes))
}

// HubLandingConfig is the hub stream that receives one site's uplink of
// stream name. It accepts any subject (a source cannot refuse what the
// site's consumer sends, and that consumer is on the site's box); the
// hub-side copy to name is filtered to UplinkSubjects, so a stolen site box
// cannot write under another site's name.
func HubLandingConfig(name, site string, replicas int, q SiteQuota) jetstream.StreamConfig {
	stream := LandingStream(name, site)
	cfg := jetstream.StreamConfig{
		Name:        stream,
		Description: "site " + site + "'s uplink of " + name + ", before filtering",
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Replicas:    replicas,
		Subjects:    []string{"alpha.hub.none." + stream},
		Discard:     jetstream.DiscardNew,
		MaxAge:      q.Window,
	}
	switch name {
	case StatusStream:
		// No MaxAge: a key slot freed by age would let the site invent
		// another key. Updates of a key it holds always fit.
		cfg.MaxAge = 0
		cfg.MaxMsgsPerSubject = 1
		cfg.MaxMsgs = q.StatusKeys
		cfg.MaxBytes = q.StatusBytes
	case TelemetryStream:
		cfg.MaxBytes = q.TelemetryBytes
	case EventsStream:
		cfg.MaxBytes = q.EventsBytes
	case LogsStream:
		cfg.MaxBytes = q.LogsBytes
		if cfg.MaxBytes <= 0 {
			cfg.MaxBytes = DefaultSiteQuota.LogsBytes
		}
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
	// LogsMaxAge and LogsMaxBytes bound the LOGS stream (0: the defaults);
	// a node's blueprint may change them (spec.telemetry.logs.retention).
	LogsMaxAge   time.Duration
	LogsMaxBytes int64
}

// DefaultSiteLimits keep a week or 1 GiB of metrics, 30 days or 256 MiB of
// events and 3 days or 256 MiB of log lines at a site.
var DefaultSiteLimits = SiteLimits{MaxAge: 7 * 24 * time.Hour, MaxBytes: 1 << 30, EventsMaxBytes: 256 << 20,
	LogsMaxAge: 3 * 24 * time.Hour, LogsMaxBytes: 256 << 20}

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
	case LogsStream:
		cfg.Subjects = []string{LogsSubjects(site)}
		cfg.MaxAge, cfg.MaxBytes = DefaultSiteLimits.LogsMaxAge, DefaultSiteLimits.LogsMaxBytes
		if lim.LogsMaxAge > 0 {
			cfg.MaxAge = lim.LogsMaxAge
		}
		if lim.LogsMaxBytes > 0 {
			cfg.MaxBytes = lim.LogsMaxBytes
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
