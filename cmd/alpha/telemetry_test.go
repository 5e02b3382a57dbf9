package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// TestTelemetryTailInProduction reads a site's telemetry at a production hub
// (operator mode, TLS) with the tenant admin's credentials, as the README
// shows `alpha telemetry tail`.
func TestTelemetryTailInProduction(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	site := p.LeafJetStream(l)
	m := streams.Metric{Name: "cpu.percent", Value: 42, Site: "s1", Node: "n1", Layer: "host",
		Kind: streams.KindMetric, ID: "n1.tail.1", TS: time.Now().UTC()}
	data, _ := json.Marshal(m)
	_, err := site.Publish(context.Background(), m.Subject(), data)
	check.NoError(t, err)

	out := &check.Buffer{}
	tailOut = out
	t.Cleanup(func() { tailOut = nil })
	check.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := runTelemetry(ctx, []string{"tail", "--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
			"--tls-ca", p.PKI.CA, "--site", "s1", "--since", "1h", "--json"}); err != nil {
			return err
		}
		if !strings.Contains(out.String(), `"id":"n1.tail.1"`) {
			return context.DeadlineExceeded
		}
		return nil
	})
}
