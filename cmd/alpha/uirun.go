package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/hub/ui"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// uiFlags turn on the hub's dashboard and configure its alerts.
type uiFlags struct{ listen, alerts, webhook *string }

func addUIFlags(fs *flag.FlagSet, listen string) uiFlags {
	return uiFlags{
		listen: fs.String("ui-listen", listen, "fleet dashboard listener HOST:PORT (port -1: one of its own choosing); in operator mode "+
			"it serves HTTPS with --tls-cert and lets in tenant admins signed in with 'alpha ui login'; empty: off"),
		alerts: fs.String("alerts", "", "alert rules file (YAML); empty: the defaults (site stale 5m, health below 0.5 for 5m, "+
			"3 drift repairs of one resource in 1h, remediation escalated, permission denied); off: no alerts"),
		webhook: fs.String("alerts-webhook", "", "Alertmanager-compatible URL (its /api/v2/alerts) that receives firing and resolved alerts; overrides the file's"),
	}
}

// start runs the alert rules and, with --ui-listen, the dashboard. The
// returned stop function ends both; url is the dashboard's, if any.
func (f uiFlags) start(ctx context.Context, h *hub.Hub, op *accounts.Operator, tf tlsfiles.Files, log *slog.Logger) (stop func(), url string, err error) {
	stop = func() {}
	if *f.alerts == "off" && *f.listen == "" {
		return stop, "", nil
	}
	conns, err := tenantConns(h, op)
	if err != nil {
		return stop, "", err
	}
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
		closeAll(conns)
	}
	var uts []ui.Tenant
	var ats []alerts.Tenant
	for _, c := range conns {
		js, err := jetstream.New(c.nc)
		if err != nil {
			stop()
			return func() {}, "", err
		}
		uts = append(uts, ui.Tenant{Name: c.name, JS: js})
		ats = append(ats, alerts.Tenant{Name: c.name, JS: js})
	}
	if *f.alerts != "off" {
		cfg := alerts.Default()
		if *f.alerts != "" {
			if cfg, err = alerts.Load(*f.alerts); err != nil {
				stop()
				return func() {}, "", err
			}
		}
		if *f.webhook != "" {
			cfg.Webhook = *f.webhook
		}
		eng, err := alerts.Start(ctx, alerts.Options{Config: cfg, Tenants: ats, Log: log, Replicas: h.Replicas(),
			// In a cluster only the JetStream meta leader evaluates, so
			// each alert fires once.
			Active: func() bool { return !h.Server.JetStreamIsClustered() || h.Server.JetStreamIsLeader() }})
		if err != nil {
			stop()
			return func() {}, "", fmt.Errorf("--alerts: %w", err)
		}
		stops = append(stops, eng.Stop)
	}
	if *f.listen == "" {
		return stop, "", nil
	}
	url, srvStop, err := serveUI(*f.listen, uts, op, tf, log)
	if err != nil {
		stop()
		return func() {}, "", err
	}
	stops = append(stops, srvStop)
	return stop, url, nil
}

// serveUI listens on addr and serves the dashboard: without operator mode
// plain HTTP on loopback only and no sign-in; in operator mode HTTPS with
// the hub's certificate and sign-in by each tenant's administrator.
func serveUI(addr string, tenants []ui.Tenant, op *accounts.Operator, tf tlsfiles.Files, log *slog.Logger) (string, func(), error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", nil, fmt.Errorf("--ui-listen %q: %w", addr, err)
	}
	if port == "-1" {
		port = "0"
	}
	cfg := ui.Config{Tenants: tenants, Log: log}
	var tc *tls.Config
	if op == nil {
		if !isLoopback(host) {
			return "", nil, fmt.Errorf("--ui-listen %s: without operator mode nobody signs in, so the dashboard listens on loopback only", addr)
		}
	} else {
		if tc, err = (tlsfiles.Files{Cert: tf.Cert, Key: tf.Key}).Server(); err != nil {
			return "", nil, fmt.Errorf("--ui-listen: %w", err)
		}
		cfg.Secure = true
		cfg.Admins = map[string]ui.Admin{}
		names, err := op.Tenants()
		if err != nil {
			return "", nil, err
		}
		for _, t := range names {
			user, adm, err := ui.AdminFromCreds(t, op.AdminCreds(t))
			if err != nil {
				return "", nil, err
			}
			cfg.Admins[user] = adm
		}
	}
	handler, err := ui.New(cfg)
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
	if err != nil {
		return "", nil, fmt.Errorf("--ui-listen %s: %w", addr, err)
	}
	scheme := "http"
	if tc != nil {
		ln = tls.NewListener(ln, tc)
		scheme = "https"
	}
	// No write timeout: the pages' event streams stay open.
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dashboard stopped", "err", err)
		}
	}()
	url := scheme + "://" + strings.Replace(ln.Addr().String(), "0.0.0.0", "127.0.0.1", 1) + "/"
	return url, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx) // open event streams end with the deadline
		srv.Close()
	}, nil
}
