package accounts_test

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/hub/metrics"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// Two tenants share a site: each one's telemetry reaches its own hub
// account, and the hub's Prometheus exporter, reading every tenant through
// that tenant's connection (as `alpha hub` does under operator mode),
// shows each series once, labelled with its tenant.
func TestMetricsPerTenant(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := newEnv(t, "x", "y")
	var sources []metrics.Tenant
	for i, tenant := range []string{"x", "y"} {
		bundle := e.addSite("s", tenant, "n1")
		l := e.startLeaf(bundle, nil)
		p, err := telemetry.NewPublisher(telemetry.PublisherConfig{Conn: e.agentConn(l, bundle, "s", "n1"), Site: "s", Node: "n1", Log: quiet()})
		check.NoError(t, err)
		go p.Run(ctx)
		p.Publish(telemetryMetric(float64(i + 1)))
		fctx, fcancel := context.WithTimeout(ctx, 10*time.Second)
		check.NoError(t, p.Flush(fctx))
		fcancel()
		_, js := e.admin(tenant)
		sources = append(sources, metrics.Tenant{Name: tenant, JS: js})
	}
	exp, err := metrics.Start(ctx, metrics.Config{Tenants: sources, Log: quiet()})
	check.NoError(t, err)
	defer exp.Stop()

	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(exp.Write(pw)) }()
		parser := expfmt.NewTextParser(model.LegacyValidation)
		fams, err := parser.TextToMetricFamilies(pr)
		if err != nil {
			return err
		}
		f := fams["alpha_cpu_percent"]
		if f == nil || len(f.Metric) != 2 {
			return fmt.Errorf("alpha_cpu_percent: %v, want one series per tenant", f)
		}
		got := map[string]float64{}
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "tenant" {
					got[l.GetValue()] = m.GetGauge().GetValue()
				}
			}
		}
		if got["x"] != 1 || got["y"] != 2 {
			return fmt.Errorf("per tenant %v, want x=1 y=2", got)
		}
		return nil
	})
}

func telemetryMetric(v float64) streams.Metric {
	return streams.Metric{Name: "cpu.percent", Value: v, Unit: "%", Layer: "host"}
}
