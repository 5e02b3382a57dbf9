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
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("telemetry", "tail telemetry, health and events as they reach the hub", runTelemetry)
}

func runTelemetry(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "tail" {
		fmt.Fprintln(os.Stderr, "usage: alpha telemetry tail [--nats URL] [--site S] [--node N] [--since 10m] [--metrics=false] [--json]")
		return flag2help(args)
	}
	fs := newFlags("telemetry tail")
	url := fs.String("nats", "nats://127.0.0.1:4222", "hub client URL")
	site := fs.String("site", "", "only this site")
	node := fs.String("node", "", "only this node")
	since := fs.Duration("since", 0, "start this far back (default: only new messages)")
	withMetrics := fs.Bool("metrics", true, "include metrics (health changes and events are always shown)")
	asJSON := fs.Bool("json", false, "print each message as JSON")
	creds := fs.String("creds", "", "credentials file (operator mode), e.g. a tenant admin's")
	ca := fs.String("tls-ca", "", "CA (PEM) of the hub's certificate")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// A hub restart is ridden out; a hub away for longer (some 30 to 60 s
	// of reconnects, 1 s apart plus TLS jitter, not the default 2 min or
	// more) ends the tail with an error.
	nc, js, err := dialHub("alpha-telemetry-tail", *url, *creds, *ca, nats.MaxReconnects(30), nats.ReconnectWait(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	type source struct{ stream, root string }
	sources := []source{{streams.EventsStream, streams.EventsRoot}}
	if *withMetrics {
		sources = append(sources, source{streams.TelemetryStream, streams.TelemetryRoot})
	}
	var out sync.Mutex
	var ccs []jetstream.ConsumeContext
	defer func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}()
	// The first consumer that cannot go on ends the tail with its error;
	// nats.go would otherwise keep a tail of a dead hub waiting silently.
	failed := make(chan error, len(sources))
	for _, s := range sources {
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.TelemetryFilter(s.root, *site, *node)}}
		if *since > 0 {
			start := time.Now().Add(-*since)
			cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &start
		} else {
			cfg.DeliverPolicy = jetstream.DeliverNewPolicy
		}
		cfg.MaxResetAttempts = natsutil.ReadResets
		c, err := js.OrderedConsumer(ctx, s.stream, cfg)
		if err != nil {
			return fmt.Errorf("reading hub stream %s: %w", s.stream, err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) {
			var x streams.Metric
			if err := json.Unmarshal(m.Data(), &x); err != nil || x.Kind == "" {
				return // drift and hold events have their own shape
			}
			out.Lock()
			defer out.Unlock()
			printMetric(tailOut, x, *asJSON)
		},
			// 10 s pulls have 5 s heartbeats: a dead hub is noticed after
			// 10 s (the default, 30 s), then the consumer's remaking fails.
			jetstream.PullExpiry(10*time.Second),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				if !tailGivesUp(err) {
					return
				}
				select { // nats.go holds a lock here: never block
				case failed <- fmt.Errorf("reading hub stream %s: %w", s.stream, err):
				default:
				}
			}))
		if err != nil {
			return fmt.Errorf("reading hub stream %s: %w", s.stream, err)
		}
		ccs = append(ccs, cc)
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// tailGivesUp tells the errors after which an ordered consumer's Consume
// delivers nothing more: the connection closed (its reconnects ran out),
// or the consumer could not be made again within its MaxResetAttempts
// (the last try's error: a timeout or the server's refusal). The others
// (a missed heartbeat, a consumer deleted or moved) start that remaking.
func tailGivesUp(err error) bool {
	var api *jetstream.APIError
	return errors.Is(err, jetstream.ErrConnectionClosed) || errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) || errors.As(err, &api)
}

// tailOut is where `telemetry tail` prints (a test reads it).
var tailOut io.Writer = os.Stdout

func flag2help(args []string) error {
	if len(args) == 0 {
		return errors.New("missing subcommand: tail")
	}
	return fmt.Errorf("unknown subcommand %q: want tail", args[0])
}

func printMetric(w io.Writer, m streams.Metric, asJSON bool) {
	if asJSON {
		b, _ := json.Marshal(m)
		fmt.Fprintln(w, string(b))
		return
	}
	keys := make([]string, 0, len(m.Labels))
	for k := range m.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var lab []string
	for _, k := range keys {
		lab = append(lab, k+"="+m.Labels[k])
	}
	line := fmt.Sprintf("%s %-6s %s/%s %s %s=%g", m.TS.Local().Format("15:04:05.000"), m.Kind, m.Site, m.Node, m.Layer, m.Name, m.Value)
	if m.Unit != "" {
		line += " " + m.Unit
	}
	if len(lab) > 0 {
		line += " {" + strings.Join(lab, ", ") + "}"
	}
	if m.Text != "" {
		line += "  " + m.Text
	}
	fmt.Fprintln(w, line)
}
