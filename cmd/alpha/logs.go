package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("logs", "read a node's unit journal and container output, at the hub or at the site leaf", runLogs)
}

const logsUsage = "usage: alpha logs --site S --node N [--unit U | --container C] [--since 10m] [-f] [--level warning] [--at hub|site] [--nats URL] [--creds FILE] [--tls-ca CA] [--json]"

func runLogs(ctx context.Context, args []string) error {
	fs := newFlags("logs")
	url := fs.String("nats", "nats://127.0.0.1:4222", "client URL of the hub (or of the site leaf with --at site)")
	at := fs.String("at", "hub", "where to read: hub (every site, as the tenant admin) or site (the site leaf, with the bundle's site-operator.nk; works while the site is cut off)")
	site := fs.String("site", "", "site of the node (required)")
	node := fs.String("node", "", "node (required)")
	unit := fs.String("unit", "", "only this unit's journal, e.g. meter.service")
	ctr := fs.String("container", "", "only this container's output")
	since := fs.Duration("since", 10*time.Minute, "start this far back")
	follow := fs.Bool("f", false, "keep printing lines as they arrive")
	level := fs.String("level", "debug", "lowest level shown (emerg, alert, crit, err, warning, notice, info, debug)")
	asJSON := fs.Bool("json", false, "print each line as JSON")
	creds := fs.String("creds", "", "credentials: the tenant admin's (hub) or the site bundle's site-operator.nk (site)")
	ca := fs.String("tls-ca", "", "CA (PEM) of the server's certificate")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var problems []error
	if err := streams.ValidID("site", *site); err != nil {
		problems = append(problems, fmt.Errorf("--site: %w", err))
	}
	if err := streams.ValidID("node", *node); err != nil {
		problems = append(problems, fmt.Errorf("--node: %w", err))
	}
	if *unit != "" && *ctr != "" {
		problems = append(problems, fmt.Errorf("--unit %q and --container %q: give one of them", *unit, *ctr))
	}
	if *at != "hub" && *at != "site" {
		problems = append(problems, fmt.Errorf("--at %q: want hub or site", *at))
	}
	if streams.LevelRank(*level) == streams.LevelRank("info") && *level != "info" {
		problems = append(problems, fmt.Errorf("--level %q: want one of %v", *level, streams.Levels))
	}
	if *since < 0 {
		problems = append(problems, fmt.Errorf("--since %s must not be negative", *since))
	}
	if len(problems) > 0 {
		fmt.Fprintln(os.Stderr, logsUsage)
		return errors.Join(problems...)
	}
	opts, err := dialOptions("alpha logs", *creds, *ca)
	if err != nil {
		return err
	}
	domain := streams.HubDomain
	if *at == "site" {
		// The site operator may receive on its own inbox only.
		domain = *site
		opts = append(opts, nats.CustomInboxPrefix(streams.Inbox(*site, streams.SiteOperator)))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, domain)
	if err != nil {
		return err
	}
	kind, source := "", ""
	switch {
	case *unit != "":
		kind, source = streams.LogUnit, *unit
	case *ctr != "":
		kind, source = streams.LogContainer, *ctr
	}
	q := logQuery{filter: streams.LogsFilter(*site, *node, kind, source), since: *since, follow: *follow,
		floor: streams.LevelRank(*level), json: *asJSON}
	return q.print(ctx, js, logsOut)
}

// logsOut is where `alpha logs` prints (a test reads it).
var logsOut io.Writer = os.Stdout

type logQuery struct {
	filter string
	since  time.Duration
	follow bool
	floor  int
	json   bool
}

// logsOffline is how long `alpha logs` waits for a lost connection to come
// back before it fails: a hub restart is ridden out, a hub gone for good
// fails the command instead of hanging it (also -f). While connected, a
// read the server stopped answering is caught by the iterator's heartbeat
// and nats.go's bounded remaking of the consumer (natsutil.ReadResets).
const logsOffline = 30 * time.Second

// print writes the lines from since until now, then, with follow, those
// that arrive until ctx ends.
func (q logQuery) print(ctx context.Context, js jetstream.JetStream, w io.Writer) error {
	start := time.Now().Add(-q.since)
	read := 0
	fail := func(err error) error {
		return fmt.Errorf("reading stream %s (%s), %d lines read: %w", streams.LogsStream, q.filter, read, err)
	}
	// One consumer for the whole read, its messages pulled in batches;
	// nats.go makes it again only after a break (an ordered consumer's
	// Next would make it again for every line).
	c, err := js.OrderedConsumer(ctx, streams.LogsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{q.filter}, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &start,
		MaxResetAttempts: natsutil.ReadResets})
	if err != nil {
		return fail(err)
	}
	if !q.follow {
		// The count comes with the consumer's creation: a site operator
		// may create consumers but not ask for their info.
		if info := c.CachedInfo(); info != nil && info.NumPending == 0 {
			return nil
		}
	}
	// 10 s pulls have 5 s heartbeats: a server that stops answering is
	// noticed after 10 s (the default: 30 s).
	it, err := c.Messages(jetstream.PullExpiry(10 * time.Second))
	if err != nil {
		return fail(err)
	}
	defer it.Stop()
	var offline time.Time // when the connection was found lost, zero while up
	for {
		msg, err := it.Next(jetstream.NextMaxWait(time.Second))
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, nats.ErrTimeout):
			// nats.go stops the heartbeat check while disconnected and
			// reconnects for minutes: the bound is ours.
			switch {
			case js.Conn().IsConnected():
				offline = time.Time{}
			case offline.IsZero():
				offline = time.Now()
			case time.Since(offline) > logsOffline:
				return fail(fmt.Errorf("connection lost and not back within %s", logsOffline))
			}
			continue
		case err != nil:
			return fail(err)
		}
		read++
		var l streams.LogLine
		if err := json.Unmarshal(msg.Data(), &l); err == nil && streams.LevelRank(l.Level) <= q.floor {
			printLine(w, l, q.json)
		}
		if !q.follow {
			if md, err := msg.Metadata(); err != nil || md.NumPending == 0 {
				return nil
			}
		}
	}
}

func printLine(w io.Writer, l streams.LogLine, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(l)
		fmt.Fprintln(w, string(b))
		return
	}
	fmt.Fprintf(w, "%s %s/%s %s:%s %-7s %s\n", l.TS.Local().Format("2006-01-02 15:04:05.000"), l.Site, l.Node, l.Kind, l.Source, l.Level, l.Text)
}
