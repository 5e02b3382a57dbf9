package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// logLines is how many numbered lines each talker writes.
const logLines = 400

// logsBlueprint: a unit of a real systemd and a container each write
// logLines numbered lines, 50 a second; another container floods 100,000
// lines as fast as it can. 100 lines a second per source are kept.
func logsBlueprint() string {
	return fmt.Sprintf(`apiVersion: alpha/v1
kind: Blueprint
metadata: {name: logs}
spec:
  units:
    - name: talker.service
      content: |
        [Service]
        ExecStart=/bin/sh -c 'i=0; while [ $i -lt %[1]d ]; do i=$((i+1)); echo "unit line $i"; sleep 0.02; done; exec sleep infinity'
  containers:
    - name: talker
      image: localhost/busybox:test
      command: [sh, -c, 'i=0; while [ $i -lt %[1]d ]; do i=$((i+1)); echo "ctr line $i"; sleep 0.02; done; exec sleep 100000']
    - name: flood
      image: localhost/busybox:test
      command: [sh, -c, 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo "flood $i"; done; exec sleep 100000']
  telemetry:
    collectors: [{name: agent, interval: 500ms}, {name: link, interval: 500ms}]
    logs: {level: info, rate: 100, burst: 200}
`, logLines)
}

// numbered reads the LogLines of stream that match filter, in the
// stream's order, and returns the numbers after prefix.
func numbered(t testing.TB, js jetstream.JetStream, stream, filter, prefix string) ([]int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, MaxResetAttempts: 5})
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []int
	for left := info.NumPending; left > 0; {
		batch, err := c.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var l streams.LogLine
			if err := json.Unmarshal(m.Data(), &l); err != nil {
				return nil, err
			}
			if n, ok := strings.CutPrefix(l.Text, prefix); ok {
				v, err := strconv.Atoi(n)
				if err != nil {
					return nil, fmt.Errorf("line %q: %w", l.Text, err)
				}
				out = append(out, v)
			}
		}
		if got == 0 {
			return nil, fmt.Errorf("%s: %d messages pending but none fetched", stream, left)
		}
		left -= uint64(got)
	}
	return out, nil
}

// complete says whether ns is exactly 1..n in order: none lost, none
// twice, none out of order.
func complete(ns []int, n int) error {
	if len(ns) != n {
		seen := map[int]int{}
		for _, v := range ns {
			seen[v]++
		}
		var lost, dup []int
		for i := 1; i <= n; i++ {
			if seen[i] == 0 {
				lost = append(lost, i)
			}
			if seen[i] > 1 {
				dup = append(dup, i)
			}
		}
		return fmt.Errorf("%d lines, want %d (lost %v, duplicated %v)", len(ns), n, lost, dup)
	}
	for i, v := range ns {
		if v != i+1 {
			return fmt.Errorf("line %d is number %d: out of order or duplicated", i+1, v)
		}
	}
	return nil
}

// TestLogsThroughCutLink runs the production setup (operator, TLS, signed
// blueprints) with a real systemd (nspawn) and real podman. A unit and a
// container write numbered lines; the site's uplink is cut while they do
// and the agent restarts during the outage. The lines are readable at the
// site while it is cut off, and reach the hub once the link is back: in
// order per source, none lost, none twice. A third container floods: the
// rate limit keeps 100 lines a second of it, the drops are counted (metric)
// and reported (event), and no metric or event is pushed out.
func TestLogsThroughCutLink(t *testing.T) {
	m := nspawntest.Boot(t)
	pm := podmantest.Start(t)
	pm.Busybox(t, "localhost/busybox:test")
	e := newProdEnv(t, "s1", "n1")
	proxy, err := chaos.NewProxy("127.0.0.1:0", strings.TrimPrefix(e.hub.LeafURL(), "nats-leaf://"))
	check.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	l, _ := e.leafAt("nats-leaf://"+proxy.Addr(), t.TempDir(), "127.0.0.1:-1")
	site := e.p.LeafJetStream(l)
	_, hub := e.p.Admin(chaos.Tenant)

	state := t.TempDir()
	startAgent := func() func() {
		opts, err := accounts.AgentOptions(e.site, "n1", filepath.Join(e.bundle, accounts.AgentSeedFile("n1")))
		check.NoError(t, err)
		keys, err := accounts.ReadTrustedKeys(filepath.Join(e.bundle, accounts.TrustedKeysFile))
		check.NoError(t, err)
		v, err := sign.NewVerifier(keys, state)
		check.NoError(t, err)
		a, err := agent.New(agent.Config{Site: e.site, Node: "n1", NATSURL: l.ClientURL(), Root: m.Root, StateDir: state,
			Log: stack.Log(), Resync: 5 * time.Second, NATSOptions: opts, Verify: v.Verify,
			PodmanURI: pm.URI, SystemdBus: m.BusAddress, Journal: []string{"journalctl", "--root=" + m.Root}})
		check.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { a.Run(ctx); close(done) }()
		stop := func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	firstAgent := time.Now()
	stopAgent := startAgent()
	e.put("s1.n1", logsBlueprint())

	unitFilter := streams.LogsFilter("s1", "n1", streams.LogUnit, "talker.service")
	ctrFilter := streams.LogsFilter("s1", "n1", streams.LogContainer, "talker")
	// The unit's first lines reach the hub: the whole path works. Cut the
	// link while the talker is still writing (for ~8 s; waiting for the
	// container's lines too could take that long on a busy machine, and
	// they are checked at the hub after the outage).
	check.For(t, 90*time.Second, 100*time.Millisecond, func() error {
		ns, err := numbered(t, hub, streams.LogsStream, unitFilter, "unit line ")
		if err != nil {
			return err
		}
		if len(ns) == 0 {
			return fmt.Errorf("no line of %s at the hub yet", unitFilter)
		}
		return nil
	})
	proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if l.Connected() {
			return fmt.Errorf("the leaf still has its uplink")
		}
		return nil
	})
	cutAt := time.Now()
	// The agent restarts during the outage: it resumes where the site
	// acked, reading no line twice and skipping none.
	time.Sleep(time.Second) // let some lines go out under the first agent
	stopAgent()
	startAgent()

	// Readable at the site while cut off: every line, once, in order.
	check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
		for _, c := range []struct{ filter, prefix string }{{unitFilter, "unit line "}, {ctrFilter, "ctr line "}} {
			ns, err := numbered(t, site, streams.LogsStream, c.filter, c.prefix)
			if err != nil {
				return err
			}
			if err := complete(ns, logLines); err != nil {
				return fmt.Errorf("at the site: %s: %w", c.filter, err)
			}
		}
		return nil
	})
	check.Equal(t, l.Connected(), false)
	before, err := numbered(t, hub, streams.LogsStream, unitFilter, "unit line ")
	check.NoError(t, err)
	if len(before) >= logLines {
		t.Fatalf("the hub had all %d unit lines before the link came back: the cut did not cut", len(before))
	}
	t.Logf("outage %v; the hub had %d of %d unit lines during it", time.Since(cutAt).Round(time.Millisecond), len(before), logLines)

	proxy.Set(chaos.Up)
	restored := time.Now()
	check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
		for _, c := range []struct{ filter, prefix string }{{unitFilter, "unit line "}, {ctrFilter, "ctr line "}} {
			ns, err := numbered(t, hub, streams.LogsStream, c.filter, c.prefix)
			if err != nil {
				return err
			}
			if err := complete(ns, logLines); err != nil {
				return fmt.Errorf("at the hub: %s: %w", c.filter, err)
			}
		}
		return nil
	})
	t.Logf("all lines at the hub %v after the link came back", time.Since(restored).Round(time.Millisecond))

	// The flood: rate-limited, counted, reported.
	floodFilter := streams.LogsFilter("s1", "n1", streams.LogContainer, "flood")
	// Every line of it is either at the site or counted as dropped (the
	// count is reported every 10 s), none both, none twice.
	var dropped float64
	var flood []int
	check.For(t, 60*time.Second, 500*time.Millisecond, func() error {
		ms, err := metrics(hub, streams.TelemetryStream, streams.TelemetryFilter(streams.TelemetryRoot, "s1", "n1"))
		if err != nil {
			return err
		}
		for _, m := range ms {
			if m.Name == "logs.dropped" && m.Labels["source"] == "container:flood" {
				dropped = max(dropped, m.Value)
			}
		}
		if flood, err = numbered(t, site, streams.LogsStream, floodFilter, "flood "); err != nil {
			return err
		}
		if total := float64(len(flood)) + dropped; total > 100_000 {
			t.Fatalf("flood: %d lines shipped and %v dropped: more than the 100000 it wrote", len(flood), dropped)
		} else if total < 100_000 {
			return fmt.Errorf("flood: %d lines shipped and %v dropped of 100000", len(flood), dropped)
		}
		evs, err := metrics(hub, streams.EventsStream, streams.TelemetryFilter(streams.EventsRoot, "s1", "n1"))
		if err != nil {
			return err
		}
		for _, ev := range evs {
			if ev.Name == "logs.rate_limited" && ev.Labels["source"] == "container:flood" {
				return nil
			}
		}
		return fmt.Errorf("no logs.rate_limited event of the flood at the hub")
	})
	// At most a burst of 200 per agent (the restart gave it a second
	// bucket) and 100 a second for as long as an agent could have been
	// reading the flood: the bucket refills while the agent reads, and a
	// busy machine reads the 100,000 lines through podman slowly.
	reading := time.Since(firstAgent)
	if limit := 2*200 + int(100*reading.Seconds()) + 100; len(flood) > limit {
		t.Fatalf("flood: %d lines shipped in %v, more than the %d the rate limit allows; it did not hold", len(flood), reading.Round(time.Second), limit)
	}
	t.Logf("flood: %d lines shipped, %v dropped", len(flood), dropped)

	// Nothing pushed out of the site's metrics and events.
	for _, name := range []string{streams.TelemetryStream, streams.EventsStream} {
		st, err := site.Stream(context.Background(), name)
		check.NoError(t, err)
		info, err := st.Info(context.Background())
		check.NoError(t, err)
		if info.State.FirstSeq != 1 || info.State.Msgs != info.State.LastSeq {
			t.Fatalf("site %s lost messages: first %d, last %d, %d kept", name, info.State.FirstSeq, info.State.LastSeq, info.State.Msgs)
		}
	}
}

// metrics reads every Metric of stream matching filter.
func metrics(js jetstream.JetStream, stream, filter string) ([]streams.Metric, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, MaxResetAttempts: 5})
	if err != nil {
		return nil, err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	var out []streams.Metric
	for left := info.NumPending; left > 0; {
		batch, err := c.Fetch(int(min(left, 1000)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			var x streams.Metric
			if json.Unmarshal(m.Data(), &x) == nil {
				out = append(out, x)
			}
		}
		if got == 0 {
			break
		}
		left -= uint64(got)
	}
	return out, nil
}
