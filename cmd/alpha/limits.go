package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/streams"
)

// byteSize is a flag of bytes: a number with an optional binary suffix
// (K, M, G, T, with or without "iB"); -1 means unlimited where allowed.
type byteSize struct{ v *int64 }

func (b byteSize) String() string {
	if b.v == nil {
		return ""
	}
	return formatBytes(*b.v)
}

func (b byteSize) Set(s string) error {
	n, err := parseBytes(s)
	if err != nil {
		return err
	}
	*b.v = n
	return nil
}

func formatBytes(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if n > 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func parseBytes(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(s), "iB"), "B")
	shift := uint(0)
	if t != "" {
		switch t[len(t)-1] {
		case 'K', 'k':
			shift = 10
		case 'M', 'm':
			shift = 20
		case 'G', 'g':
			shift = 30
		case 'T', 't':
			shift = 40
		}
		if shift > 0 {
			t = t[:len(t)-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < -1 || n > 1<<(62-shift) {
		return 0, fmt.Errorf("size %q is not a number of bytes like 512MiB, 32GiB or -1", s)
	}
	if n == -1 {
		return -1, nil
	}
	return n << shift, nil
}

// addTenantLimitFlags are the JetStream limits of tenant accounts
// (accounts init, tenant-add).
func addTenantLimitFlags(fs *flag.FlagSet) *accounts.TenantLimits {
	l := accounts.DefaultTenantLimits
	fs.Var(byteSize{&l.Storage}, "max-storage", "tenant's JetStream file storage at the hub (-1: unlimited)")
	fs.Var(byteSize{&l.Memory}, "max-memory", "tenant's JetStream memory storage at the hub (-1: unlimited)")
	fs.Int64Var(&l.Streams, "max-streams", l.Streams, "tenant's streams and buckets at the hub (a site adds none) (-1: unlimited)")
	fs.Int64Var(&l.Consumers, "max-consumers", l.Consumers, "tenant's consumers at the hub, 7 per site (3 mirrors, 4 uplinks) (-1: unlimited)")
	return &l
}

// addHubLimitFlags are the byte limits of every tenant's uplink streams at
// the hub, applied at each start.
func addHubLimitFlags(fs *flag.FlagSet) *streams.HubLimits {
	l := streams.DefaultHubLimits
	fs.Var(byteSize{&l.TelemetryBytes}, "max-telemetry", "bytes of TELEMETRY kept per tenant; oldest dropped first")
	fs.Var(byteSize{&l.EventsBytes}, "max-events", "bytes of EVENTS kept per tenant; oldest dropped first")
	fs.Var(byteSize{&l.StatusBytes}, "max-status", "bytes of the status bucket per tenant; oldest keys dropped first")
	fs.Var(byteSize{&l.LogsBytes}, "max-logs", "bytes of LOGS (journal and container lines) kept per tenant; oldest dropped first")
	return &l
}

// addSiteQuotaFlags are what the hub takes from one site (site add).
func addSiteQuotaFlags(fs *flag.FlagSet) *streams.SiteQuota {
	q := streams.DefaultSiteQuota
	fs.Var(byteSize{&q.TelemetryBytes}, "quota-telemetry", "telemetry the hub takes from the site per --quota-window; beyond, the site buffers")
	fs.Var(byteSize{&q.EventsBytes}, "quota-events", "events the hub takes from the site per --quota-window")
	fs.Var(byteSize{&q.LogsBytes}, "quota-logs", "log lines the hub takes from the site per --quota-window; beyond, the site buffers")
	fs.Int64Var(&q.StatusKeys, "quota-status-keys", q.StatusKeys, "status keys the site may hold at the hub")
	fs.Var(byteSize{&q.StatusBytes}, "quota-status", "bytes of status the site may hold at the hub")
	fs.DurationVar(&q.Window, "quota-window", q.Window, "window of the telemetry and events quotas")
	return &q
}

// anySet reports whether a flag whose name starts with prefix was given.
func anySet(fs *flag.FlagSet, prefix string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || strings.HasPrefix(f.Name, prefix) })
	return set
}
