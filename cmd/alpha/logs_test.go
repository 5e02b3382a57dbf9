package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// TestLogsCommandInProduction reads a node's lines with `alpha logs` at a
// production hub (tenant admin, TLS) and at the site leaf with the site
// operator's key from the bundle, filtered by unit and by level, and
// follows new lines with -f.
func TestLogsCommandInProduction(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{})
	site := p.LeafJetStream(l)
	publish := func(kind, source, level, text string, i int) {
		t.Helper()
		line := streams.LogLine{TS: time.Now().UTC(), Site: "s1", Node: "n1", Kind: kind, Source: source, Level: level, Text: text,
			ID: fmt.Sprintf("n1.test.%s.%d", source, i)}
		data, _ := json.Marshal(line)
		_, err := site.Publish(context.Background(), line.Subject(), data)
		check.NoError(t, err)
	}
	publish(streams.LogUnit, "meter.service", "info", "meter started", 1)
	publish(streams.LogUnit, "meter.service", "err", "meter lost its sensor", 2)
	publish(streams.LogContainer, "web", "info", "GET / 200", 3)

	run := func(args ...string) (string, error) {
		out := &check.Buffer{}
		logsOut = out
		defer func() { logsOut = nil }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := runLogs(ctx, args)
		return out.String(), err
	}
	hub := []string{"--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"), "--tls-ca", p.PKI.CA, "--site", "s1", "--node", "n1"}
	// At the hub once the uplink has carried the lines up.
	check.For(t, 20*time.Second, 200*time.Millisecond, func() error {
		out, err := run(append(hub, "--unit", "meter.service")...)
		if err != nil {
			return err
		}
		if !strings.Contains(out, "meter started") || !strings.Contains(out, "meter lost its sensor") || strings.Contains(out, "GET /") {
			return fmt.Errorf("alpha logs --unit meter.service at the hub printed %q", out)
		}
		return nil
	})
	out, err := run(append(hub, "--level", "warning")...)
	check.NoError(t, err)
	if strings.Contains(out, "meter started") || !strings.Contains(out, "s1/n1 unit:meter.service err     meter lost its sensor") {
		t.Fatalf("--level warning printed %q", out)
	}

	// At the site leaf, with the bundle's site operator key.
	siteArgs := []string{"--at", "site", "--nats", l.ClientURL(), "--creds", filepath.Join(bundle, accounts.SiteOperatorSeedFile),
		"--site", "s1", "--node", "n1", "--container", "web", "--json"}
	out, err = run(siteArgs...)
	check.NoError(t, err)
	if !strings.Contains(out, `"text":"GET / 200"`) || strings.Contains(out, "meter") {
		t.Fatalf("alpha logs --at site --container web printed %q", out)
	}

	// -f prints what arrives after it started, until it is stopped.
	follow := &check.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error)
	go func() {
		_, js := p.Admin("acme")
		q := logQuery{filter: streams.LogsFilter("s1", "n1", "", ""), follow: true, floor: streams.LevelRank("debug")}
		stopped <- q.print(ctx, js, follow)
	}()
	i := 4
	check.For(t, 20*time.Second, 300*time.Millisecond, func() error {
		i++
		publish(streams.LogContainer, "web", "info", "GET /late 200", i)
		if !strings.Contains(follow.String(), "GET /late 200") {
			return fmt.Errorf("-f printed %q", follow.String())
		}
		return nil
	})
	cancel()
	check.NoError(t, <-stopped)
	if strings.Contains(follow.String(), "meter started") {
		t.Fatalf("-f without --since printed old lines: %q", follow.String())
	}
}

// TestLogsReadsWithOneConsumer: `alpha logs` reading 200 lines makes a
// bounded number of consumers on the hub's LOGS stream, not one per line
// (an ordered consumer's Next makes its consumer again at every call: two
// JetStream API requests per line). Counted by the hub's own advisories.
func TestLogsReadsWithOneConsumer(t *testing.T) {
	const n = 200
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	ocFillLogs(t, p, n)
	nc, js := p.Admin("acme")
	var created atomic.Int32
	marked := make(chan struct{})
	const marker = "rb-marker"
	sub, err := nc.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED."+streams.LogsStream+".>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, "."+marker) {
			close(marked)
			return
		}
		created.Add(1)
	})
	check.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	check.NoError(t, nc.Flush())

	out := &check.Buffer{}
	logsOut = out
	t.Cleanup(func() { logsOut = nil })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	check.NoError(t, runLogs(ctx, []string{"--nats", p.Hub.ClientURL(), "--creds", p.Op.AdminCreds("acme"),
		"--tls-ca", p.PKI.CA, "--site", "s1", "--node", "n1", "--since", "1h"}))
	if got := out.Count("\n"); got != n || !strings.Contains(out.String(), fmt.Sprintf("line %d\n", n-1)) {
		t.Fatalf("alpha logs printed %d lines, want %d:\n%s", got, n, out.String())
	}
	// The server sends advisories in order: once the one of a consumer
	// made after the read arrives, those of the read have all arrived.
	_, err = js.CreateConsumer(ctx, streams.LogsStream, jetstream.ConsumerConfig{Name: marker, AckPolicy: jetstream.AckNonePolicy})
	check.NoError(t, err)
	select {
	case <-marked:
	case <-time.After(10 * time.Second):
		t.Fatal("no advisory for the marker consumer in 10 s")
	}
	// One, and room for a reset or two of the ordered consumer.
	if got := created.Load(); got < 1 || got > 3 {
		t.Fatalf("reading %d lines made %d consumers on %s, want 1 to 3", n, got, streams.LogsStream)
	}
	t.Logf("reading %d lines made %d consumer(s)", n, created.Load())
}
