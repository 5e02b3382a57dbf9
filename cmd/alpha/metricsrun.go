package main

import (
	"context"
	"flag"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/metrics"
)

type metricsFlags struct{ listen *string }

func addMetricsFlags(fs *flag.FlagSet) metricsFlags {
	return metricsFlags{listen: fs.String("metrics-listen", "127.0.0.1:9464",
		"HTTP listener for Prometheus (latest value of each telemetry series at /metrics); empty: off")}
}

// start serves the hub's telemetry in Prometheus text format, so existing
// dashboards can scrape it.
func (f metricsFlags) start(ctx context.Context, h *hub.Hub, log *slog.Logger) error {
	if *f.listen == "" {
		return nil
	}
	nc, err := h.Connect()
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	// Each hub of a cluster reads through its own durable consumers.
	exp, err := metrics.Start(ctx, metrics.Config{JS: js, Log: log, Durable: "metrics-" + h.Server.Name()})
	if err != nil {
		nc.Close()
		return err
	}
	go func() {
		defer nc.Close()
		defer exp.Stop()
		if err := exp.ListenAndServe(ctx, *f.listen); err != nil && ctx.Err() == nil {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}()
	log.Info("prometheus endpoint", "url", "http://"+*f.listen+"/metrics")
	return nil
}
