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

// HubUplinkConfig is the hub side of an uplink. It takes what the hub's
// ingest publishes under HubIngestPrefix(name) and stores it under the
// site's own subject (the prefix dropped by the stream's subject
// transform). It does not listen on the sites' subjects themselves: in open
// mode the leaves' own publishes cross the leaf link and would be stored a
// second time, out of order. Full, it drops its oldest messages, so a flood
// ages out history but never stops new messages from arriving. Air-gap
// bundles reach it through sources of per-site bundle streams.
func HubUplinkConfig(name string, replicas int, lim HubLimits) jetstream.StreamConfig {
	lim = lim.withDefaults()
	cfg := jetstream.StreamConfig{
		Name:             name,
		Storage:          jetstream.FileStorage,
		Retention:        jetstream.LimitsPolicy, // never WorkQueue/Interest across an unreliable link
		Replicas:         replicas,
		Subjects:         []string{HubIngestPrefix(name) + ".>"},
		SubjectTransform: &jetstream.SubjectTransformConfig{Source: HubIngestPrefix(name) + ".>", Destination: ">"},
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

// LandingStream is the hub stream one site's uplink of stream name landed
// in before the hub's ingest; leaf.Upgrade removes them.
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

// SiteQuota bounds what the hub takes from one site: the hub's ingest takes
// at most TelemetryBytes of telemetry, EventsBytes of events and LogsBytes
// of log lines from it per Window and holds at most StatusKeys status keys
// of it. A site over a byte quota is told to come back when the window
// ends; its data waits at the site. Status values for keys beyond
// StatusKeys are dropped. StatusBytes is kept for configurations written
// before the ingest; the key count bounds status now.
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
// site that logs more catches up later), 4096 status keys.
var DefaultSiteQuota = SiteQuota{TelemetryBytes: 32 << 20, EventsBytes: 8 << 20, StatusKeys: 4096, StatusBytes: 4 << 20,
	LogsBytes: 8 << 20, Window: 10 * time.Minute}

// Validate names every quota that is not positive.
func (q SiteQuota) Validate() error {
	err := positive("site quota", map[string]int64{"telemetry": q.TelemetryBytes, "events": q.EventsBytes,
		"status keys": q.StatusKeys, "status": q.StatusBytes, "window (ns)": int64(q.Window)})
	return errors.Join(err, notNegative("site quota logs", q.LogsBytes))
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

// UplinkConsumerConfig is the durable pull consumer on a site stream that
// the leaf's forwarder reads; it acknowledges what the hub's ingest took,
// so a restarted leaf resumes where the hub's answers ended.
func UplinkConsumerConfig(site, stream string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:     UplinkConsumer(stream),
		Description: "site " + site + "'s uplink of " + stream + " to the hub's ingest",
		AckPolicy:   jetstream.AckAllPolicy,
		// A batch the hub did not answer is sent again after this.
		AckWait:       30 * time.Second,
		MaxAckPending: 2000,
		DeliverPolicy: jetstream.DeliverAllPolicy,
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
		// One copy even in a hub cluster: R3 made each site three raft
		// groups; the hub's keeper makes a lost member's consumers again
		// (hub/keeper.go).
		Replicas: 1,
	}
}
