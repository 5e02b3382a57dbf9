package ui

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/rollout"
	"github.com/alpha-edge/alpha/hub/scan"
	"github.com/alpha-edge/alpha/hub/sites"
	"github.com/alpha-edge/alpha/streams"
)

// What the pages read, each time they are rendered: the hub's buckets and
// streams are the truth, the UI keeps no copy.

// fleetView is the fleet page.
type fleetView struct {
	Tenant     string
	Phases     []count
	Sites      []siteRow
	StaleSites []string
	Nodes      []nodeRow // after the filter
	Total      int
	Alerts     []streams.Alert
	Rollouts   []rolloutRow
	RolloutsOn bool
	Filter     filter
	SiteNames  []string
	PhaseNames []string
}

type count struct {
	Name string
	N    int
}

type siteRow struct {
	Name  string
	Link  string // connected, stale, unregistered
	Heard string // how long ago
	Nodes int
}

type nodeRow struct {
	Site, Node, Blueprint, Phase, Health, Reported, Link, Hold string
	Desired, Applied, Repairs                                  uint64
}

type rolloutRow struct {
	Fleet, Generation, State, Reason, Batch string
	Nodes                                   []string // "3 Good", per phase
}

type filter struct{ Site, Phase, Q string }

func (f filter) match(n streams.NodeStatus) bool {
	if f.Site != "" && n.Site != f.Site {
		return false
	}
	if f.Phase != "" && !strings.EqualFold(n.Phase, f.Phase) {
		return false
	}
	if f.Q != "" {
		q := strings.ToLower(f.Q)
		if !strings.Contains(strings.ToLower(n.Site+"."+n.Node+" "+n.Blueprint+" "+n.Message), q) {
			return false
		}
	}
	return true
}

func ago(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return d.Truncate(time.Second).String() + " ago"
}

func linkState(links map[string]time.Duration, site string) (string, time.Duration) {
	a, ok := links[site]
	switch {
	case !ok:
		return "unregistered", -1
	case sites.Stale(a):
		return "stale", a
	}
	return "connected", a
}

func firingList(ctx context.Context, js jetstream.JetStream) []streams.Alert {
	f, _ := alerts.Firing(ctx, js)
	out := slices.Collect(maps.Values(f))
	slices.SortFunc(out, func(a, b streams.Alert) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Name, b.Name))
	})
	return out
}

func loadFleet(ctx context.Context, js jetstream.JetStream, f filter, now time.Time) (*fleetView, error) {
	nodes, err := inventory.Statuses(ctx, js)
	if err != nil {
		return nil, err
	}
	links, _ := sites.Links(ctx, js)
	v := &fleetView{Filter: f, Total: len(nodes), Alerts: firingList(ctx, js)}
	phases := map[string]int{}
	perSite := map[string]int{}
	staleNode := map[string]bool{}
	for _, n := range nodes {
		phases[n.Phase]++
		perSite[n.Site]++
		link, _ := linkState(links, n.Site)
		age := now.Sub(n.Reported)
		if link == "connected" && age > 3*streams.StatusHeartbeat {
			link = "stale"
			staleNode[n.Site] = true
		}
		if !f.match(n) {
			continue
		}
		health := "-"
		if n.Health != nil {
			health = fmt.Sprintf("%.2f", *n.Health)
		}
		hold := ""
		if n.Hold != "" {
			hold = "until " + n.HoldUntil.UTC().Format("Jan 2 15:04")
		}
		v.Nodes = append(v.Nodes, nodeRow{Site: n.Site, Node: n.Node, Blueprint: n.Blueprint, Phase: n.Phase, Health: health,
			Reported: ago(age), Link: link, Hold: hold, Desired: n.DesiredRevision, Applied: n.AppliedRevision, Repairs: n.Repairs})
	}
	for _, p := range slices.Sorted(maps.Keys(phases)) {
		v.Phases = append(v.Phases, count{p, phases[p]})
		v.PhaseNames = append(v.PhaseNames, p)
	}
	names := map[string]bool{}
	for s := range perSite {
		names[s] = true
	}
	for s := range links {
		names[s] = true
	}
	for _, s := range slices.Sorted(maps.Keys(names)) {
		link, heard := linkState(links, s)
		if staleNode[s] && link == "connected" {
			link = "stale"
		}
		if link != "connected" {
			v.StaleSites = append(v.StaleSites, s)
		}
		v.Sites = append(v.Sites, siteRow{Name: s, Link: link, Heard: ago(heard), Nodes: perSite[s]})
		v.SiteNames = append(v.SiteNames, s)
	}
	v.Rollouts, v.RolloutsOn = rollouts(ctx, js)
	return v, nil
}

// rollouts lists the rollouts bucket, if the hub has one: each fleet's
// rollout with its state, batch and how many nodes are in each phase.
func rollouts(ctx context.Context, js jetstream.JetStream) ([]rolloutRow, bool) {
	kv, err := js.KeyValue(ctx, streams.RolloutsBucket)
	if err != nil {
		return nil, false
	}
	var out []rolloutRow
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, true
	}
	for k := range keys.Keys() {
		en, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var r rollout.Rollout
		if err := json.Unmarshal(en.Value(), &r); err != nil {
			out = append(out, rolloutRow{Fleet: k, State: "unreadable", Reason: err.Error()})
			continue
		}
		row := rolloutRow{Fleet: k, Generation: r.Generation, State: r.State, Reason: r.Reason,
			Batch: fmt.Sprintf("%d of %d", min(r.Batch+1, len(r.Batches)), len(r.Batches))}
		counts := r.Count(nil)
		for _, ph := range slices.Sorted(maps.Keys(counts)) {
			row.Nodes = append(row.Nodes, fmt.Sprintf("%d %s", counts[ph], ph))
		}
		out = append(out, row)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Fleet < out[j].Fleet })
	return out, true
}

// nodeView is the node page.
type nodeView struct {
	Tenant    string
	Site      string
	Node      string
	Found     bool
	Status    streams.NodeStatus
	Link      string
	Heard     string
	Health    string
	Resources []resourceRow
	Drift     []driftRow
	Events    []eventRow
	Logs      []logRow
	LogsNote  string
	Alerts    []streams.Alert
	Series    []series
}

type resourceRow struct {
	streams.Resource
	HealthText string
	Bad        bool
}

type driftRow struct {
	At                                           string
	Resource, Op, Detail, Found, Want, ErrorText string
}

type eventRow struct {
	At, Kind, What, Text string
}

type logRow struct {
	At, Source, Level, Text string
}

// series is one chart: the last hour of one telemetry series.
type series struct {
	Name string    `json:"name"`
	Unit string    `json:"unit,omitempty"`
	X    []float64 `json:"x"` // minutes relative to now (negative)
	Y    []float64 `json:"y"`
}

// Bounds of what one node page reads, so a chatty node cannot make the
// page slow: messages scanned per stream and rows shown.
const (
	maxScan    = 20000
	maxRows    = 50
	maxLogs    = 100
	maxSeries  = 12
	maxPoints  = 360
	eventsSpan = 24 * time.Hour
	chartSpan  = time.Hour
)

func loadNode(ctx context.Context, js jetstream.JetStream, site, node string, now time.Time) (*nodeView, error) {
	v := &nodeView{Site: site, Node: node, Health: "-"}
	kv, err := js.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return nil, fmt.Errorf("status bucket: %w", err)
	}
	if en, err := kv.Get(ctx, streams.Key(site, node)); err == nil && json.Unmarshal(en.Value(), &v.Status) == nil {
		v.Found = true
	}
	links, _ := sites.Links(ctx, js)
	var heard time.Duration
	v.Link, heard = linkState(links, site)
	v.Heard = ago(heard)
	if v.Status.Health != nil {
		v.Health = fmt.Sprintf("%.2f", *v.Status.Health)
	}
	for _, r := range v.Status.Resources {
		v.Resources = append(v.Resources, resourceRow{Resource: r, HealthText: fmt.Sprintf("%.2f", r.Health), Bad: r.Health < 1})
	}
	for _, a := range firingList(ctx, js) {
		if a.Site == site && (a.Node == "" || a.Node == node) {
			v.Alerts = append(v.Alerts, a)
		}
	}
	// Events and drift: the node's subjects in EVENTS and the hub's alerts about it.
	err = scan.Since(ctx, js, streams.EventsStream, []string{
		streams.EventsRoot + "." + streams.Token(site) + "." + streams.Token(node) + ".>",
		streams.AlertsRoot + "." + streams.Token(site) + "." + streams.Token(node) + ".>",
	}, now.Add(-eventsSpan), maxScan, func(m jetstream.Msg) {
		subj := m.Subject()
		switch {
		case strings.HasSuffix(subj, ".drift"):
			var ev struct {
				Resource, Op, Detail, Found, Want, Error string
				At                                       time.Time
			}
			if json.Unmarshal(m.Data(), &ev) == nil {
				v.Drift = append(v.Drift, driftRow{At: stamp(ev.At), Resource: ev.Resource, Op: ev.Op, Detail: ev.Detail,
					Found: ev.Found, Want: ev.Want, ErrorText: ev.Error})
			}
		case strings.HasPrefix(subj, streams.AlertsRoot+"."):
			var a streams.Alert
			if json.Unmarshal(m.Data(), &a) == nil {
				at := a.StartsAt
				if a.State == streams.AlertResolved {
					at = a.EndsAt
				}
				v.Events = append(v.Events, eventRow{At: stamp(at), Kind: "alert " + a.State, What: a.Name, Text: a.Summary})
			}
		default:
			var mt streams.Metric
			if json.Unmarshal(m.Data(), &mt) == nil {
				text := mt.Text
				if text == "" {
					text = fmt.Sprintf("%g", mt.Value)
				}
				v.Events = append(v.Events, eventRow{At: stamp(mt.TS), Kind: mt.Kind, What: mt.Layer + " " + mt.Name, Text: text})
			}
		}
	})
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("events: %w", err)
	}
	v.Drift = newestFirst(v.Drift, maxRows)
	v.Events = newestFirst(v.Events, maxRows)
	// Logs, from the hub's LOGS stream once the hub has one.
	err = scan.Since(ctx, js, streams.LogsStream, []string{streams.LogsRoot + "." + streams.Token(site) + "." + streams.Token(node) + ".>"},
		now.Add(-eventsSpan), maxScan, func(m jetstream.Msg) {
			var l streams.LogLine
			if json.Unmarshal(m.Data(), &l) == nil {
				v.Logs = append(v.Logs, logRow{At: stamp(l.TS), Source: l.Kind + ":" + l.Source, Level: l.Level, Text: l.Text})
				if len(v.Logs) > 2*maxLogs {
					v.Logs = slices.Clone(v.Logs[len(v.Logs)-maxLogs:])
				}
			}
		})
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		v.LogsNote = "no logs: the hub has no LOGS stream"
	case err != nil:
		v.LogsNote = "logs unreadable: " + err.Error()
	case len(v.Logs) == 0:
		v.LogsNote = "no logs in the last day"
	}
	if len(v.Logs) > maxLogs {
		v.Logs = v.Logs[len(v.Logs)-maxLogs:]
	}
	v.Series = loadSeries(ctx, js, site, node, now)
	return v, nil
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") }

func newestFirst[T any](s []T, n int) []T {
	if len(s) > n {
		s = s[len(s)-n:]
	}
	slices.Reverse(s)
	return s
}

// loadSeries reads the node's last hour of metrics, one series per name
// and label set, thinned to maxPoints each.
func loadSeries(ctx context.Context, js jetstream.JetStream, site, node string, now time.Time) []series {
	by := map[string]*series{}
	scan.Since(ctx, js, streams.TelemetryStream, []string{streams.TelemetryFilter(streams.TelemetryRoot, site, node)},
		now.Add(-chartSpan), maxScan, func(m jetstream.Msg) {
			var mt streams.Metric
			if json.Unmarshal(m.Data(), &mt) != nil {
				return
			}
			name := mt.Name
			if len(mt.Labels) > 0 {
				var ls []string
				for _, k := range slices.Sorted(maps.Keys(mt.Labels)) {
					ls = append(ls, k+"="+mt.Labels[k])
				}
				name += "{" + strings.Join(ls, ",") + "}"
			}
			s, ok := by[name]
			if !ok {
				if len(by) >= 4*maxSeries {
					return
				}
				s = &series{Name: name, Unit: mt.Unit}
				by[name] = s
			}
			s.X = append(s.X, mt.TS.Sub(now).Minutes())
			s.Y = append(s.Y, mt.Value)
		})
	out := make([]series, 0, len(by))
	for _, s := range by {
		if n := len(s.X); n > maxPoints {
			step := (n + maxPoints - 1) / maxPoints
			var x, y []float64
			for i := 0; i < n; i += step {
				x, y = append(x, s.X[i]), append(y, s.Y[i])
			}
			s.X, s.Y = x, y
		}
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b series) int {
		return cmp.Or(cmp.Compare(rank(a.Name), rank(b.Name)), cmp.Compare(a.Name, b.Name))
	})
	if len(out) > maxSeries {
		out = out[:maxSeries]
	}
	return out
}

// chartOrder puts the series a person looks at first on top: the host's
// load, then the workloads', then the link's; the rest after, by name.
var chartOrder = []string{"cpu.", "memory.percent", "load", "temperature", "resource.", "container.", "unit.", "uplink.",
	"reconcile.", "disk.percent", "iface.rx_bytes", "iface.tx_bytes"}

func rank(name string) int {
	for i, p := range chartOrder {
		if strings.HasPrefix(name, p) {
			return i
		}
	}
	return len(chartOrder)
}
