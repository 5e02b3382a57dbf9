// Package status assembles a node's status from the pieces each part of the
// agent exports, and writes it to the site's status bucket.
//
// The flow is one-directional: the engine hands in its status after every
// pass, a part whose piece changes between passes (health, denied
// permissions) says so with Refresh, and the Collector pulls every piece
// from its exporters, in order, then publishes. No part calls back into the
// agent.
package status

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/streams"
)

// Exporter writes one part's piece into the node's status. eng is the
// engine's last status, for parts that report on the applied blueprint.
type Exporter func(ns *streams.NodeStatus, eng engine.Status)

// Collector owns a node's status.
type Collector struct {
	site, node string
	exporters  []Exporter

	build sync.Mutex // one assembly at a time: an older one never overwrites a newer

	mu      sync.Mutex
	eng     engine.Status // the engine's last status
	status  streams.NodeStatus
	dirty   chan struct{} // the status changed: publish it
	applied chan struct{} // the applied blueprint changed
}

// New returns a collector for site and node that assembles the engine's
// status with the pieces of exporters, in that order.
func New(site, node string, exporters []Exporter) *Collector {
	return &Collector{site: site, node: node, exporters: exporters,
		dirty: make(chan struct{}, 1), applied: make(chan struct{}, 1)}
}

// Engine takes the engine's status after a pass (engine.Config.OnStatus).
func (c *Collector) Engine(s engine.Status) {
	c.build.Lock()
	defer c.build.Unlock()
	c.mu.Lock()
	moved := c.eng.Applied != s.Applied
	c.eng = s
	c.mu.Unlock()
	if moved {
		signal(c.applied)
	}
	c.assemble(s)
}

// Refresh reassembles the status from the engine's last one, for a part
// whose piece changed between passes: status carries it now rather than at
// the next pass.
func (c *Collector) Refresh() {
	c.build.Lock()
	defer c.build.Unlock()
	c.assemble(c.Last())
}

func (c *Collector) assemble(s engine.Status) {
	ns := s.NodeStatus
	ns.Site, ns.Node = c.site, c.node
	// A copy: exporters rewrite resources in place, the engine's stay as they are.
	ns.Resources = slices.Clone(s.Resources)
	for _, export := range c.exporters {
		export(&ns, s)
	}
	c.mu.Lock()
	changed := !same(c.status, ns)
	c.status = ns
	c.mu.Unlock()
	if changed {
		signal(c.dirty)
	}
}

// Denied is the exporter of the operations the site refused lately: a node
// whose credential lacks a grant is missing a feature (holds, artifacts,
// link telemetry...), so it is not Converged, and each denial is an error.
func Denied(recent func(now time.Time) []string) Exporter {
	return func(ns *streams.NodeStatus, _ engine.Status) {
		denied := recent(time.Now())
		if len(denied) == 0 {
			return
		}
		if ns.Phase == engine.PhaseConverged || ns.Phase == engine.PhaseApplying {
			ns.Phase = engine.PhaseDegraded
		}
		ns.Errors = slices.Clone(ns.Errors) // the engine's own slice stays as it is
		for _, d := range denied {
			ns.Errors = append(ns.Errors, "permission denied: "+d)
		}
	}
}

// Status returns the last status assembled.
func (c *Collector) Status() streams.NodeStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

// Last returns the engine's last status.
func (c *Collector) Last() engine.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.eng
}

// AppliedChanged receives when the engine's applied blueprint changed, so
// telemetry and remediation follow it.
func (c *Collector) AppliedChanged() <-chan struct{} { return c.applied }

// Publish writes the status to the site's status bucket under key when it
// changes and as a heartbeat, until ctx is done; a failed write is retried,
// only the newest status matters.
func (c *Collector) Publish(ctx context.Context, js jetstream.JetStream, key string, log *slog.Logger) {
	heartbeat := time.NewTicker(streams.StatusHeartbeat)
	defer heartbeat.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	var kv jetstream.KeyValue
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.dirty:
		case <-heartbeat.C:
		case <-retry.C:
		}
		ns := c.Status()
		if ns.Phase == "" {
			continue
		}
		ns.Reported = time.Now().UTC()
		err := func() error {
			if kv == nil {
				actx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				var err error
				if kv, err = js.KeyValue(actx, streams.StatusBucket); err != nil {
					return err
				}
			}
			b, _ := json.Marshal(ns)
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := kv.Put(pctx, key, b)
			return err
		}()
		if err != nil && ctx.Err() == nil {
			if !errors.Is(err, context.Canceled) {
				log.Debug("status not written; retrying", "err", err)
			}
			retry.Reset(time.Second)
		}
	}
}

// same compares what matters, ignoring timestamps of routine passes.
func same(x, y streams.NodeStatus) bool {
	x.LastReconcile, y.LastReconcile = time.Time{}, time.Time{}
	x.Reported, y.Reported = time.Time{}, time.Time{}
	bx, _ := json.Marshal(x)
	by, _ := json.Marshal(y)
	return string(bx) == string(by)
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
