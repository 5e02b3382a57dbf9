package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/streams"
)

// printAlerts lists the alerts firing at the hub (its alerts bucket) under
// the status table; nothing when none fires or the hub has no bucket.
func printAlerts(ctx context.Context, w io.Writer, js jetstream.JetStream, now time.Time) {
	f, err := alerts.Firing(ctx, js)
	if err != nil || len(f) == 0 {
		return
	}
	list := slices.SortedFunc(maps.Values(f), func(a, b streams.Alert) int {
		return cmp.Or(cmp.Compare(a.Site, b.Site), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Name, b.Name))
	})
	fmt.Fprintf(w, "\nFIRING ALERTS (%d)\n", len(list))
	for _, a := range list {
		where := a.Site
		if a.Node != "" {
			where += "." + a.Node
		}
		fmt.Fprintf(w, "  %-12s %-24s %s (for %s)\n", a.Name, where, a.Summary, now.Sub(a.StartsAt).Truncate(time.Second))
	}
}
