package telemetry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// site is a hub and one site leaf whose uplink runs through a chaos proxy.
type site struct {
	t      testing.TB
	hub    *hub.Hub
	proxy  *chaos.Proxy
	leaf   *leaf.Leaf
	store  string
	listen string // bound by the first start, then kept, so clients reconnect to a restarted leaf
	limits streams.SiteLimits
	hubJS  jetstream.JetStream
}

func newSite(t testing.TB, limits streams.SiteLimits) *site {
	t.Helper()
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: quiet})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	p, err := chaos.NewProxy("127.0.0.1:0", strings.TrimPrefix(h.LeafURL(), "nats-leaf://"))
	check.NoError(t, err)
	t.Cleanup(func() { p.Close() })
	nc, err := h.Connect()
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	hjs, err := jetstream.New(nc)
	check.NoError(t, err)
	s := &site{t: t, hub: h, proxy: p, store: t.TempDir(), listen: "127.0.0.1:-1", limits: limits, hubJS: hjs}
	s.start()
	t.Cleanup(func() {
		if s.leaf != nil {
			s.leaf.Shutdown()
		}
	})
	return s
}

func (s *site) start() {
	s.t.Helper()
	s.launch()
	check.For(s.t, 20*time.Second, 10*time.Millisecond, func() error {
		if !s.leaf.Synced() {
			return fmt.Errorf("leaf not synced with the hub")
		}
		return nil
	})
}

func (s *site) restart() {
	s.t.Helper()
	s.leaf.Shutdown()
	s.leaf = nil
	s.launch()
}

// launch starts the leaf on s.listen: the first start binds a port of its
// own choosing and keeps it, a later one binds it again.
func (s *site) launch() {
	s.t.Helper()
	// These tests move 100,000 messages at once: a quota that takes them in
	// one window, so they measure store and forward, not the quota.
	quota := streams.DefaultSiteQuota
	quota.TelemetryBytes = 256 << 20
	check.Rebind(s.t, func() (err error) {
		s.leaf, err = leaf.Start(context.Background(), leaf.Config{Site: "s1", HubURLs: []string{"nats-leaf://" + s.proxy.Addr()}, Quota: &quota,
			StoreDir: s.store, Listen: s.listen, Log: quiet, Limits: s.limits})
		return err
	})
	s.listen = strings.TrimPrefix(s.leaf.ClientURL(), "nats://")
}

// publisher connects a publisher to the leaf and runs it until the test ends.
func (s *site) publisher(node string) *telemetry.Publisher {
	return s.publisherWith(node, telemetry.PublisherConfig{BootID: "b1"})
}

// siteConn is a connection to the site leaf, closed when the test ends.
func (s *site) siteConn() *nats.Conn {
	s.t.Helper()
	nc, err := nats.Connect("nats://"+s.listen, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	check.NoError(s.t, err)
	s.t.Cleanup(nc.Close)
	return nc
}

// publisherWith is publisher with cfg's other fields (boot id, spool).
func (s *site) publisherWith(node string, cfg telemetry.PublisherConfig) *telemetry.Publisher {
	s.t.Helper()
	cfg.Conn, cfg.Site, cfg.Node, cfg.Log = s.siteConn(), "s1", node, quiet
	p, err := telemetry.NewPublisher(cfg)
	check.NoError(s.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	s.t.Cleanup(func() { cancel(); <-done })
	return p
}

func (s *site) hubMsgs(stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	st, err := s.hubJS.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

func (s *site) waitHub(stream string, want uint64) {
	s.t.Helper()
	check.For(s.t, 60*time.Second, 20*time.Millisecond, func() error {
		if got := s.hubMsgs(stream); got != want {
			return fmt.Errorf("hub %s holds %d messages, want %d", stream, got, want)
		}
		return nil
	})
}

// readAll reads every message of a stream in stream order.
func readAll(t testing.TB, js jetstream.JetStream, stream string) []streams.Metric {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	check.NoError(t, err)
	info, err := st.Info(ctx)
	check.NoError(t, err)
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	check.NoError(t, err)
	var out []streams.Metric
	for uint64(len(out)) < info.State.Msgs {
		// Asking for no more than is left returns as soon as it is there.
		batch, err := c.Fetch(min(5000, int(info.State.Msgs)-len(out)), jetstream.FetchMaxWait(5*time.Second))
		check.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			var x streams.Metric
			check.NoError(t, json.Unmarshal(m.Data(), &x))
			// At the hub the id is scoped by the site (streams.HubMsgID).
			if h := m.Headers().Get(nats.MsgIdHdr); h != x.ID && h != streams.HubMsgID(x.Site, x.ID) {
				t.Fatalf("message id header %q, body id %q of site %s", h, x.ID, x.Site)
			}
			out = append(out, x)
		}
		if n == 0 {
			t.Fatalf("read %d of %d messages of %s, then nothing", len(out), info.State.Msgs, stream)
		}
	}
	return out
}

// exactly checks that got holds the ids node.b1.1..n exactly once, in order.
func exactly(t testing.TB, got []streams.Metric, node string, n int) {
	t.Helper()
	exactlyOnce(t, got, node, n, true)
}

// exactlyOnce is exactly with the order check optional.
func exactlyOnce(t testing.TB, got []streams.Metric, node string, n int, ordered bool) {
	t.Helper()
	if len(got) != n {
		t.Fatalf("%d messages, want %d", len(got), n)
	}
	seen := make([]bool, n+1)
	last := 0
	for _, m := range got {
		parts := strings.Split(m.ID, ".")
		if len(parts) != 3 || parts[0] != node {
			t.Fatalf("unexpected id %q", m.ID)
		}
		seq, err := strconv.Atoi(parts[2])
		if err != nil || seq < 1 || seq > n {
			t.Fatalf("id %q out of range 1..%d", m.ID, n)
		}
		if seen[seq] {
			t.Fatalf("id %q twice", m.ID)
		}
		seen[seq] = true
		if ordered && seq < last {
			t.Fatalf("id %q after sequence %d: out of order", m.ID, last)
		}
		last = seq
		if m.Value != float64(seq) {
			t.Fatalf("id %q carries value %v", m.ID, m.Value)
		}
	}
}

func publishN(p *telemetry.Publisher, from, to int) {
	for i := from; i <= to; i++ {
		p.Publish(streams.Metric{Name: "test.seq", Value: float64(i), Layer: "host", Labels: map[string]string{"k": "v"}})
	}
}

func flush(t testing.TB, p *telemetry.Publisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	check.NoError(t, p.Flush(ctx))
}

const outage = 100_000

// TestStoreAndForward: 100,000 messages published at the site while the
// uplink is cut are all acked locally; when the link returns the hub holds
// exactly those 100,000, once each, in order.
func TestStoreAndForward(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	s.proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.leaf.Connected() {
			return fmt.Errorf("leaf still connected")
		}
		return nil
	})
	publishN(p, 1, outage)
	flush(t, p)
	check.Equal(t, s.hubMsgs(streams.TelemetryStream), uint64(0))
	s.proxy.Set(chaos.Up)
	s.waitHub(streams.TelemetryStream, outage)
	exactly(t, readAll(t, s.hubJS, streams.TelemetryStream), "n1", outage)
}

// TestStoreAndForwardCutMidDrain cuts the link again while the backlog
// drains (the drain slowed by latency so "mid" is certain), then restores it.
func TestStoreAndForwardCutMidDrain(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	s.proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.leaf.Connected() {
			return fmt.Errorf("leaf still connected")
		}
		return nil
	})
	publishN(p, 1, outage)
	flush(t, p)
	s.proxy.SetLatency(2 * time.Millisecond)
	s.proxy.Set(chaos.Up)
	check.For(t, 30*time.Second, time.Millisecond, func() error {
		if n := s.hubMsgs(streams.TelemetryStream); n < 5000 {
			return fmt.Errorf("hub holds %d", n)
		}
		return nil
	})
	s.proxy.Set(chaos.Cut)
	mid := s.hubMsgs(streams.TelemetryStream)
	if mid >= outage {
		t.Fatalf("drain finished (%d) before the second cut", mid)
	}
	t.Logf("cut again with %d of %d at the hub", mid, outage)
	// More telemetry arrives during the second outage.
	publishN(p, outage+1, outage+1000)
	flush(t, p)
	s.proxy.SetLatency(0)
	s.proxy.Set(chaos.Up)
	s.waitHub(streams.TelemetryStream, outage+1000)
	exactly(t, readAll(t, s.hubJS, streams.TelemetryStream), "n1", outage+1000)
}

// TestStoreAndForwardLeafRestart kills the leaf while 50,000 messages wait in
// its buffer and while the publisher is still sending, restarts it on the same
// store, publishes the rest, and kills it once more in the middle of the
// drain. The publisher's retries (same ids) are dropped as duplicates.
func TestStoreAndForwardLeafRestart(t *testing.T) {
	s := newSite(t, streams.DefaultSiteLimits)
	p := s.publisher("n1")
	s.proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.leaf.Connected() {
			return fmt.Errorf("leaf still connected")
		}
		return nil
	})
	publishN(p, 1, outage/2)
	flush(t, p)
	publishN(p, outage/2+1, outage*3/4) // in flight while the leaf dies
	s.restart()
	publishN(p, outage*3/4+1, outage)
	flush(t, p)
	t.Logf("publisher across the restart: %+v", p.Stats())
	s.proxy.SetLatency(2 * time.Millisecond)
	s.proxy.Set(chaos.Up)
	check.For(t, 30*time.Second, time.Millisecond, func() error {
		if n := s.hubMsgs(streams.TelemetryStream); n < 5000 {
			return fmt.Errorf("hub holds %d", n)
		}
		return nil
	})
	s.restart() // mid-drain
	if mid := s.hubMsgs(streams.TelemetryStream); mid >= outage {
		t.Fatalf("drain finished (%d) before the restart", mid)
	}
	s.proxy.SetLatency(0)
	s.waitHub(streams.TelemetryStream, outage)
	// Every message once, but not necessarily in order: what sat in the
	// client's write buffer when the leaf died goes out on the new
	// connection (nats.go keeps it across the reconnect) before the
	// publisher retries what the dead server had lost (seen once in a busy
	// CI run: 51008 stored after 53509).
	exactlyOnce(t, readAll(t, s.hubJS, streams.TelemetryStream), "n1", outage, false)
}
