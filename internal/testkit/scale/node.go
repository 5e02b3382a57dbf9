package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// Node is a lightweight agent: it watches its blueprint key at its site's
// leaf, with the agent's own credentials and permissions, and for each
// revision it sees writes a converged status (applied and good = that
// revision) to the leaf's status bucket; it rewrites its status every
// streams.StatusHeartbeat and publishes a few metrics per telemetry
// interval, as a real agent does. It verifies and applies nothing.
type Node struct {
	Site *Site
	ID   string

	mu      sync.Mutex
	applied uint64    // the latest revision seen
	at      time.Time // when it was seen
	history []applied // every revision seen, for AppliedAt

	cancel context.CancelFunc
	done   chan struct{}
}

type applied struct {
	rev uint64
	at  time.Time
}

// Key is the node's blueprints and status key.
func (n *Node) Key() string { return streams.Key(n.Site.ID, n.ID) }

// Applied is the latest revision the node acknowledged.
func (n *Node) Applied() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applied
}

// AppliedAt is when the node first saw revision rev or a later one.
func (n *Node) AppliedAt(rev uint64) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, a := range n.history {
		if a.rev >= rev {
			return a.at, true
		}
	}
	return time.Time{}, false
}

// maxHistory bounds what a node remembers of the revisions it saw.
const maxHistory = 64

func startNode(t testing.TB, hub *prodtest.Hub, s *Site, id string, telemetry time.Duration) *Node {
	// A thousand leaves starting beside a busy hub answer late: a first
	// connect that times out is tried again, as an agent's would be.
	nc := hub.AgentConn(s.Leaf, s.Bundle, id, nats.RetryOnFailedConnect(true))
	js, err := jetstream.NewWithDomain(nc, s.ID)
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{Site: s, ID: id, cancel: cancel, done: make(chan struct{})}
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	defer ocancel()
	bp, err := js.KeyValue(octx, streams.BlueprintsBucket)
	check.NoError(t, err)
	status, err := js.KeyValue(octx, streams.StatusBucket)
	check.NoError(t, err)
	w, err := bp.Watch(ctx, n.Key())
	check.NoError(t, err)
	go n.run(ctx, js, w, status, telemetry)
	t.Cleanup(n.stop)
	return n
}

func (n *Node) stop() {
	n.cancel()
	<-n.done
}

func (n *Node) run(ctx context.Context, js jetstream.JetStream, w jetstream.KeyWatcher, status jetstream.KeyValue, telemetry time.Duration) {
	defer close(n.done)
	defer w.Stop()
	beat := time.NewTicker(streams.StatusHeartbeat)
	defer beat.Stop()
	var tick <-chan time.Time
	if telemetry > 0 {
		tt := time.NewTicker(telemetry)
		defer tt.Stop()
		tick = tt.C
	}
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-w.Updates():
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // the end of the initial values, or a delete
			}
			n.see(e.Revision())
			n.report(ctx, status)
		case <-beat.C:
			n.report(ctx, status)
		case <-tick:
			seq++
			n.publish(ctx, js, seq)
		}
	}
}

func (n *Node) see(rev uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if rev <= n.applied {
		return
	}
	n.applied, n.at = rev, time.Now()
	n.history = append(n.history, applied{rev, n.at})
	if len(n.history) > maxHistory {
		n.history = n.history[len(n.history)-maxHistory:]
	}
}

// report writes the node's status to the leaf; an error (the leaf shutting
// down) is left to the next heartbeat, as an agent does.
func (n *Node) report(ctx context.Context, status jetstream.KeyValue) {
	rev := n.Applied()
	st := streams.NodeStatus{
		Site: n.Site.ID, Node: n.ID, DesiredRevision: rev, AppliedRevision: rev, GoodRevision: rev,
		Phase: "Converged", LastReconcile: time.Now().UTC(), Reported: time.Now().UTC(), WindowOpen: true,
	}
	b, _ := json.Marshal(st)
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, _ = status.Put(ctx, n.Key(), b)
}

// telemetryMetrics are the few metrics a node publishes per interval.
var telemetryMetrics = []string{"cpu.used", "mem.used", "disk.used", "net.rx", "net.tx"}

// publish sends one pass of metrics into the site's TELEMETRY stream.
func (n *Node) publish(ctx context.Context, js jetstream.JetStream, seq uint64) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i, name := range telemetryMetrics {
		// The id names the site: the hub's streams drop a repeated id
		// within their duplicate window whatever site it came from, so
		// "n1.<seq>" from every site would keep all but the first out.
		m := streams.Metric{Name: name, Value: float64(seq), TS: time.Now().UTC(), Site: n.Site.ID, Node: n.ID,
			Layer: "host", Kind: streams.KindMetric, ID: fmt.Sprintf("%s.%s.%d.%d", n.Site.ID, n.ID, seq, i)}
		b, _ := json.Marshal(m)
		msg := &nats.Msg{Subject: m.Subject(), Data: b, Header: nats.Header{}}
		msg.Header.Set(nats.MsgIdHdr, m.ID)
		if _, err := js.PublishMsg(ctx, msg); err != nil && !errors.Is(err, context.Canceled) {
			return // the next pass tries again
		}
	}
}

// hubStatus reads a node's status from the hub's status bucket.
func hubStatus(ctx context.Context, kv jetstream.KeyValue, key string) (streams.NodeStatus, error) {
	e, err := kv.Get(ctx, key)
	if err != nil {
		return streams.NodeStatus{}, err
	}
	return decodeStatus(e.Value())
}

func decodeStatus(b []byte) (streams.NodeStatus, error) {
	var st streams.NodeStatus
	err := json.Unmarshal(b, &st)
	return st, err
}
