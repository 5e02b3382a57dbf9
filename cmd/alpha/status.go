package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/events"
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, js, err := dialHub("alpha-status", *url, *creds, *ca)
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	rep, err := collect(ctx, js)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep.nodes)
	}
	rep.print(os.Stdout, *verbose, time.Now())
	printAlerts(ctx, os.Stdout, js, time.Now())
	return nil
}

type report struct {
	nodes    []streams.NodeStatus
	drift    map[string][]events.Event // key -> drift repairs of the last week
	desired  map[string]uint64         // key -> hub revision
	linkSeen map[string]time.Duration  // site -> time since the hub last heard from it
}

func collect(ctx context.Context, js jetstream.JetStream) (*report, error) {
	r := &report{desired: map[string]uint64{}, linkSeen: map[string]time.Duration{}, drift: map[string][]events.Event{}}
	bp, err := js.KeyValue(ctx, streams.BlueprintsBucket)
	if err != nil {
		return nil, fmt.Errorf("blueprints bucket: %w", err)
	}
	if keys, err := bp.ListKeys(ctx); err == nil {
		for k := range keys.Keys() {
			if e, err := bp.Get(ctx, k); err == nil {
				r.desired[k] = e.Revision()
			}
		}
	}
	st, err := js.KeyValue(ctx, streams.StatusBucket)
	if err != nil {
		return nil, fmt.Errorf("status bucket: %w", err)
	}
	keys, err := st.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("status keys: %w", err)
	}
	for k := range keys.Keys() {
		e, err := st.Get(ctx, k)
		if err != nil {
			continue
		}
		var ns streams.NodeStatus
		if err := json.Unmarshal(e.Value(), &ns); err != nil {
			continue
		}
		r.nodes = append(r.nodes, ns)
	}
	week := time.Now().Add(-7 * 24 * time.Hour)
	for _, n := range r.nodes {
		if evs, err := events.Recent(ctx, js, streams.EventsStream, n.Site, n.Node, week, 0); err == nil {
			r.drift[streams.Key(n.Site, n.Node)] = evs
		}
	}
	sort.Slice(r.nodes, func(i, j int) bool {
		return streams.Key(r.nodes[i].Site, r.nodes[i].Node) < streams.Key(r.nodes[j].Site, r.nodes[j].Node)
	})
	if s, err := js.Stream(ctx, streams.StatusStream); err == nil {
		if info, err := s.Info(ctx); err == nil {
			for _, src := range info.Sources {
				r.addLink(ctx, js, src)
			}
		}
	}
	return r, nil
}

// addLink notes when the hub last heard from a site through a source of
// its status stream: the site's landing stream, whose own source is the
// site (a hub registered before landing streams sources the site itself).
func (r *report) addLink(ctx context.Context, js jetstream.JetStream, src *jetstream.StreamSourceInfo) {
	landing := streams.LandingStream(streams.StatusStream, "")
	if site, ok := strings.CutPrefix(src.Name, landing); ok && src.External == nil {
		s, err := js.Stream(ctx, src.Name)
		if err != nil {
			return
		}
		info, err := s.Info(ctx)
		if err != nil {
			return
		}
		for _, up := range info.Sources {
			if up.External != nil {
				r.linkSeen[site] = up.Active
			}
		}
		return
	}
	if src.External != nil {
		site := streams.DomainOfAPIPrefix(src.External.APIPrefix)
		r.linkSeen[site] = src.Active
	}
}

// linkState says whether the hub hears from the site now. The uplink
// consumers send idle heartbeats every second, so a few seconds of silence
// means the link is down.
func (r *report) linkState(site string) string {
	a, ok := r.linkSeen[site]
	switch {
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
	seen := map[string]bool{}
	for _, n := range r.nodes {
		key := streams.Key(n.Site, n.Node)
		seen[key] = true
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\t%s ago\t%s\n", n.Site, n.Node, n.Blueprint, desired,
			n.AppliedRevision, n.Phase, healthCol, n.Repairs, len(r.drift[key]), compliance, hold, age, link)
	}
	// Nodes with a blueprint that never reported.
	var missing []string
	for k := range r.desired {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		site, node, _ := strings.Cut(k, ".")
		fmt.Fprintf(tw, "%s\t%s\t-\t%d\t-\tNeverReported\t-\t-\t-\t-\t-\t-\t%s\n", site, node, r.desired[k], r.linkState(site))
	}
	tw.Flush()
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
