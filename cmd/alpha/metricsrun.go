package main

import (
	"context"
	"flag"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/metrics"
)

type metricsFlags struct{ listen *string }

func addMetricsFlags(fs *flag.FlagSet) metricsFlags {
	return metricsFlags{listen: fs.String("metrics-listen", "127.0.0.1:9464",
		"HTTP listener for Prometheus (latest value of each telemetry series at /metrics); empty: off")}
}

// start serves the hub's telemetry in Prometheus text format, so existing
// dashboards can scrape it; under operator mode it reads every tenant's
// account and labels each series with its tenant.
func (f metricsFlags) start(ctx context.Context, h *hub.Hub, op *accounts.Operator, log *slog.Logger) error {
	if *f.listen == "" {
		return nil
	}
	tenants, err := tenantConns(h, op)
	if err != nil {
		return err
	}
	cfg := metrics.Config{Log: log, Durable: "metrics-" + h.Server.Name()} // one durable per hub of a cluster
	for _, t := range tenants {
		js, err := jetstream.New(t.nc)
		if err != nil {
			closeAll(tenants)
			return err
		}
		cfg.Tenants = append(cfg.Tenants, metrics.Tenant{Name: t.name, JS: js})
	}
	serve := func(exp *metrics.Exporter) {
		defer closeAll(tenants)
		defer exp.Stop()
		if err := exp.ListenAndServe(ctx, *f.listen); err != nil && ctx.Err() == nil {
			log.Error("metrics endpoint stopped", "err", err)
		}
	}
	exp, err := metrics.Start(ctx, cfg)
	if err == nil {
		go serve(exp)
		return nil
	}
	// A hub restarted under a reconnect storm answers the exporter's
	// consumer requests late (seen with 300 sites: "context deadline
	// exceeded", and the whole hub exited). The endpoint is not worth the
	// hub: keep trying in the background.
	log.Warn("metrics endpoint not started yet; retrying", "err", err)
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				closeAll(tenants)
				return
			case <-t.C:
			}
			if exp, err := metrics.Start(ctx, cfg); err == nil {
				serve(exp)
				return
			}
		}
	}()
	return nil
}
