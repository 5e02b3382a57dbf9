package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/events"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/sites"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("status", "table of sites and nodes as the hub sees them", runStatus)
}

func runStatus(ctx context.Context, args []string) error {
	fs := newFlags("status")
	url := fs.String("nats", "nats://127.0.0.1:4222", "hub client URL")
	asJSON := fs.Bool("json", false, "print the raw status documents")
	verbose := fs.Bool("v", false, "also list each node's resources and problems")
	creds := fs.String("creds", "", "credentials file (operator mode), e.g. a tenant admin's")
	ca := fs.String("tls-ca", "", "CA (PEM) of the hub's certificate")
	var f statusFilter
	fs.StringVar(&f.site, "site", "", "only this site (the hub sends only its keys)")
	fs.StringVar(&f.phase, "phase", "", "only nodes in this phase (Converged, Failed, ..., NeverReported)")
	fs.DurationVar(&f.stale, "stale", 0, "only nodes that have not reported for this long (e.g. 5m)")
	summary := fs.Bool("summary", false, "print only the summary line")
	selector := fs.String("l", "", "only nodes whose labels (and facts., site, node) match this selector, e.g. role=pos,env!=lab")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *selector != "" {
		sel, err := inventory.ParseSelector(*selector)
		if err != nil {
			return fmt.Errorf("-l %q: %w", *selector, err)
		}
		f.sel = sel
	}
	if f.site != "" {
		if err := streams.ValidID("site", f.site); err != nil {
			return fmt.Errorf("--site: %w", err)
		}
	}
	if f.stale < 0 {
		return fmt.Errorf("--stale %v must not be negative", f.stale)
	}
	nc, js, err := dialHub("alpha-status", *url, *creds, *ca)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := collect(ctx, js, f)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep.nodes)
	}
	if *summary {
		fmt.Println(rep.summary)
		return nil
	}
	rep.print(os.Stdout, *verbose, time.Now())
	printAlerts(ctx, os.Stdout, js, time.Now())
	return nil
}

// statusFilter narrows alpha status. The site is a subject filter the hub
// applies (only that site's keys travel); phase and staleness are read
// from the status documents that arrive.
type statusFilter struct {
	site  string
	phase string
	stale time.Duration
	sel   inventory.Selector // nil: every node
}

// keys is the key filter of the buckets: one site's nodes, or all.
func (f statusFilter) keys() string {
	if f.site != "" {
		return f.site + ".*"
	}
	return ">"
}

// keep says whether a node with this phase that last reported at
// reported (zero: never) is shown.
func (f statusFilter) keep(phase string, reported, now time.Time) bool {
	if f.phase != "" && !strings.EqualFold(f.phase, phase) {
		return false
	}
	if f.stale > 0 && !reported.IsZero() && now.Sub(reported) < f.stale {
		return false
	}
	return true
}

// neverReported is the phase alpha status gives a node with a blueprint
// and no status.
const neverReported = "NeverReported"

// detailLimit bounds the per-site queries (link state, drift counts) one
// alpha status makes; beyond it those columns say "-" and the summary
// asks for --site.
const detailLimit = 100

type report struct {
	nodes    []streams.NodeStatus
	missing  []string                  // keys with a blueprint and no status, shown
	drift    map[string][]events.Event // key -> drift repairs of the last week
	desired  map[string]uint64         // key -> hub revision
	linkSeen map[string]time.Duration  // site -> time since the hub last heard from it
	detailed bool                      // drift and link were read (at most detailLimit sites)
	summary  string
}

// collect reads the hub's view through filter f: every status document and
// blueprint revision in one ordered stream each (one request per bucket,
// not one per key), then the per-site details for a handful of sites.
func collect(ctx context.Context, js jetstream.JetStream, f statusFilter) (*report, error) {
	r := &report{desired: map[string]uint64{}, linkSeen: map[string]time.Duration{}, drift: map[string][]events.Event{}}
	bp, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	if err != nil {
		return nil, fmt.Errorf("blueprints bucket: %w", err)
	}
	err = readAll(ctx, bp, f.keys(), true, func(e jetstream.KeyValueEntry) {
		r.desired[e.Key()] = e.Revision()
	})
	if err != nil {
		return nil, fmt.Errorf("blueprints: %w", err)
	}
	st, err := js.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return nil, fmt.Errorf("status bucket: %w", err)
	}
	var all []streams.NodeStatus
	err = readAll(ctx, st, f.keys(), false, func(e jetstream.KeyValueEntry) {
		var ns streams.NodeStatus
		if json.Unmarshal(e.Value(), &ns) == nil {
			all = append(all, ns)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("status: %w", err)
	}
	if len(f.sel) > 0 {
		if all, err = selectNodes(ctx, js, f, all, r.desired); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	r.summary = summarize(all, r.desired, f, now)
	seen := map[string]bool{}
	shown := map[string]bool{}
	for _, n := range all {
		seen[streams.Key(n.Site, n.Node)] = true
		if f.keep(n.Phase, n.Reported, now) {
			r.nodes = append(r.nodes, n)
			shown[n.Site] = true
		}
	}
	for k := range r.desired {
		if !seen[k] && f.keep(neverReported, time.Time{}, now) {
			r.missing = append(r.missing, k)
			site, _, _ := strings.Cut(k, ".")
			shown[site] = true
		}
	}
	sort.Strings(r.missing)
	sort.Slice(r.nodes, func(i, j int) bool {
		return streams.Key(r.nodes[i].Site, r.nodes[i].Node) < streams.Key(r.nodes[j].Site, r.nodes[j].Node)
	})
	if len(shown) > detailLimit {
		return r, nil
	}
	r.detailed = true
	week := now.Add(-7 * 24 * time.Hour)
	for site := range shown {
		// One query per site: the drift events of all its nodes.
		if evs, err := events.Recent(ctx, js, streams.EventsStream, site, "*", week, 0); err == nil {
			for _, ev := range evs {
				k := streams.Key(ev.Site, ev.Node)
				r.drift[k] = append(r.drift[k], ev)
			}
		}
	}
	if links, err := sites.Links(ctx, js); err == nil {
		for site := range shown {
			if seen, ok := links[site]; ok {
				r.linkSeen[site] = seen
			}
		}
	}
	return r, nil
}

// selectNodes keeps the nodes (and the blueprint keys of nodes without a
// status) whose labels match f's selector, as inventory sees them: the
// operator's labels, the reported facts, site and node.
func selectNodes(ctx context.Context, js jetstream.JetStream, f statusFilter, all []streams.NodeStatus, desired map[string]uint64) ([]streams.NodeStatus, error) {
	labels := map[string]map[string]string{}
	kv, err := js.KeyValue(ctx, streams.LabelsBucket)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		// No node has labels yet: facts, site and node still select.
	case err != nil:
		return nil, fmt.Errorf("labels bucket: %w", err)
	default:
		err = readAll(ctx, kv, f.keys(), false, func(e jetstream.KeyValueEntry) {
			var nl streams.NodeLabels
			if json.Unmarshal(e.Value(), &nl) == nil {
				labels[e.Key()] = nl.Labels
			}
		})
		if err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
	}
	var keep []streams.NodeStatus
	reported := map[string]bool{}
	for i := range all {
		n := inventory.Node{Site: all[i].Site, Node: all[i].Node, Status: &all[i], Labels: labels[streams.Key(all[i].Site, all[i].Node)]}
		reported[n.Key()] = true
		if f.sel.Matches(n.All()) {
			keep = append(keep, all[i])
		} else {
			delete(desired, n.Key()) // not shown, nor counted as never reported
		}
	}
	for k := range desired {
		site, node, _ := strings.Cut(k, ".")
		if !reported[k] && !f.sel.Matches(inventory.Node{Site: site, Node: node, Labels: labels[k]}.All()) {
			delete(desired, k)
		}
	}
	return keep, nil
}

// readAll calls fn with the latest entry of every key matching filter,
// delivered by the hub in one ordered stream (metaOnly: without values).
func readAll(ctx context.Context, kv jetstream.KeyValue, filter string, metaOnly bool, fn func(jetstream.KeyValueEntry)) error {
	opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
	if metaOnly {
		opts = append(opts, jetstream.MetaOnly())
	}
	w, err := kv.WatchFiltered(ctx, []string{filter}, opts...)
	if err != nil {
		return err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e := <-w.Updates():
			if e == nil {
				return nil // the initial values are all in
			}
			fn(e)
		}
	}
}

// summarize is the summary line of the nodes of f's site (or all): nodes
// per phase and the sites none of whose nodes reported within f's stale
// duration (3 heartbeats when not given).
func summarize(all []streams.NodeStatus, desired map[string]uint64, f statusFilter, now time.Time) string {
	phases := map[string]int{}
	newest := map[string]time.Time{}
	reported := map[string]bool{}
	for _, n := range all {
		phases[n.Phase]++
		reported[streams.Key(n.Site, n.Node)] = true
		if n.Reported.After(newest[n.Site]) {
			newest[n.Site] = n.Reported
		}
	}
	for k := range desired {
		if !reported[k] {
			phases[neverReported]++
			site, _, _ := strings.Cut(k, ".")
			if _, ok := newest[site]; !ok {
				newest[site] = time.Time{}
			}
		}
	}
	stale := f.stale
	if stale <= 0 {
		stale = 3 * streams.StatusHeartbeat
	}
	var staleSites []string
	for site, at := range newest {
		if now.Sub(at) >= stale {
			staleSites = append(staleSites, site)
		}
	}
	sort.Strings(staleSites)
	names := make([]string, 0, len(phases))
	total := 0
	for p, n := range phases {
		names = append(names, fmt.Sprintf("%s %d", p, n))
		total += n
	}
	sort.Strings(names)
	line := fmt.Sprintf("%d nodes in %d sites: %s; %d sites stale (no report for %v)", total, len(newest),
		strings.Join(names, ", "), len(staleSites), stale)
	if len(staleSites) > 0 {
		shown := staleSites[:min(len(staleSites), 10)]
		line += ": " + strings.Join(shown, " ")
		if len(staleSites) > len(shown) {
			line += fmt.Sprintf(" and %d more", len(staleSites)-len(shown))
		}
	}
	return line
}

// linkState says whether the hub hears from the site now. The uplink
// consumers send idle heartbeats every second, so a few seconds of silence
// means the link is down.
func (r *report) linkState(site string) string {
	a, ok := r.linkSeen[site]
	switch {
	case !r.detailed:
		return "-" // too many sites to ask about each (detailLimit)
	case !ok:
		return "unregistered"
	case a < 0 || a > 10*time.Second:
		return "stale"
	}
	return "connected"
}

func (r *report) print(w io.Writer, verbose bool, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tNODE\tBLUEPRINT\tDESIRED\tAPPLIED\tPHASE\tHEALTH\tREPAIRS\tDRIFT 7D\tCOMPLIANCE\tHOLD\tREPORTED\tLINK")
	for _, n := range r.nodes {
		key := streams.Key(n.Site, n.Node)
		desired := "-"
		if rev, ok := r.desired[key]; ok {
			desired = fmt.Sprint(rev)
		}
		age := now.Sub(n.Reported).Truncate(time.Second)
		link := r.linkState(n.Site)
		if link == "connected" && age > 3*streams.StatusHeartbeat {
			link = "stale"
		}
		healthCol := "-"
		if n.Health != nil {
			healthCol = fmt.Sprintf("%.2f", *n.Health)
		}
		compliance := "-"
		if n.Compliance != nil {
			compliance = fmt.Sprintf("%.0f%%", 100**n.Compliance)
		}
		hold := "-"
		if n.Hold != "" {
			hold = "until " + n.HoldUntil.Local().Format("Jan 2 15:04")
		}
		drift := "-"
		if r.detailed {
			drift = fmt.Sprint(len(r.drift[key]))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\t%s ago\t%s\n", n.Site, n.Node, n.Blueprint, desired,
			n.AppliedRevision, n.Phase, healthCol, n.Repairs, drift, compliance, hold, age, link)
	}
	// Nodes with a blueprint that never reported.
	for _, k := range r.missing {
		site, node, _ := strings.Cut(k, ".")
		fmt.Fprintf(tw, "%s\t%s\t-\t%d\t-\tNeverReported\t-\t-\t-\t-\t-\t-\t%s\n", site, node, r.desired[k], r.linkState(site))
	}
	tw.Flush()
	fmt.Fprintln(w, r.summary)
	if !r.detailed {
		fmt.Fprintf(w, "(drift and link columns are read for at most %d sites; narrow with --site)\n", detailLimit)
	}
	if !verbose {
		return
	}
	for _, n := range r.nodes {
		fmt.Fprintf(w, "\n%s.%s: %s %s\n", n.Site, n.Node, n.Phase, n.Message)
		if n.Gate != "" {
			fmt.Fprintf(w, "  gate: %s\n", n.Gate)
		}
		if n.Hold != "" {
			fmt.Fprintf(w, "  hold: %s\n", n.Hold)
		}
		if n.Windows != "" {
			fmt.Fprintf(w, "  maintenance windows: %s (open now: %v)\n", n.Windows, n.WindowOpen)
		}
		for _, p := range n.Invalid {
			fmt.Fprintf(w, "  invalid: %s\n", p)
		}
		for _, p := range n.Errors {
			fmt.Fprintf(w, "  error: %s\n", p)
		}
		for _, res := range n.Resources {
			fmt.Fprintf(w, "  %-40s %-10s health=%.2f repairs=%d %s\n", res.ID, res.State, res.Health, res.Repairs, res.Message)
		}
		evs := r.drift[streams.Key(n.Site, n.Node)]
		if len(evs) > 5 {
			evs = evs[len(evs)-5:]
		}
		for _, ev := range evs {
			fmt.Fprintf(w, "  drift %s %s %s: %s", ev.At.Local().Format("Jan 2 15:04:05"), ev.Op, ev.Resource, ev.Detail)
			if ev.Found != "" || ev.Want != "" {
				fmt.Fprintf(w, " (found %q, want %q)", ev.Found, ev.Want)
			}
			if ev.Error != "" {
				fmt.Fprintf(w, " failed: %s", ev.Error)
			}
			fmt.Fprintln(w)
		}
	}
}
