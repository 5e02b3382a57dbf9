// Package inventory is the hub's view of a tenant's nodes: the labels the
// operator gives them (the labels bucket), the facts and status their agents
// report (the status bucket), and selectors over both. Fleets pick their
// nodes with it; `alpha nodes` lists it.
package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// Node is one node as the hub knows it.
type Node struct {
	Site, Node string
	// Labels are the operator's labels.
	Labels map[string]string
	// Status is the node's last report (nil before the first).
	Status *streams.NodeStatus
}

// Key is the node's key, <site>.<node>.
func (n Node) Key() string { return streams.Key(n.Site, n.Node) }

// All are the labels a selector sees: the operator's, the reported facts
// under facts., and site and node.
func (n Node) All() map[string]string {
	out := maps.Clone(n.Labels)
	if out == nil {
		out = map[string]string{}
	}
	if n.Status != nil {
		for k, v := range n.Status.Facts.Labels() {
			out[k] = factValue(v)
		}
	}
	out["site"], out["node"] = n.Site, n.Node
	return out
}

// factValue makes a reported fact safe as a label value: facts are the
// node's own word, and fleet templates render labels into YAML that the
// publisher signs, so a fact may not carry a newline, quote or colon that
// would add to the blueprint. Anything but letters, digits and . _ + -
// becomes _ ("debian 13" selects as facts.os=debian_13).
func factValue(v string) string {
	if len(v) > 63 {
		v = v[:63]
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._+-", r) {
			return r
		}
		return '_'
	}, v)
}

// List returns the tenant's nodes that sel matches, sorted by site and
// node: every node with labels or a status.
func List(ctx context.Context, js jetstream.JetStream, sel Selector) ([]Node, error) {
	nodes := map[string]*Node{}
	get := func(key string) *Node {
		n := nodes[key]
		if n == nil {
			site, node, _ := strings.Cut(key, ".")
			n = &Node{Site: site, Node: node}
			nodes[key] = n
		}
		return n
	}
	if err := each(ctx, js, streams.LabelsBucket, func(key string, v []byte) error {
		var nl streams.NodeLabels
		if err := json.Unmarshal(v, &nl); err != nil {
			return fmt.Errorf("labels of %s: %w", key, err)
		}
		get(key).Labels = nl.Labels
		return nil
	}); err != nil {
		return nil, err
	}
	if err := each(ctx, js, streams.StatusBucket, func(key string, v []byte) error {
		var ns streams.NodeStatus
		if json.Unmarshal(v, &ns) != nil {
			return nil // a node's garbage is its problem, not the listing's
		}
		get(key).Status = &ns
		return nil
	}); err != nil {
		return nil, err
	}
	var out []Node
	for _, n := range nodes {
		if sel.Matches(n.All()) {
			out = append(out, *n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// each calls fn with every current value of a bucket (<site>.<node> keys
// only), in one pass of a watcher rather than a Get per key.
func each(ctx context.Context, js jetstream.JetStream, bucket string, fn func(key string, v []byte) error) error {
	kv, err := js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("bucket %s: %w", bucket, err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return fmt.Errorf("bucket %s: watch closed", bucket)
			}
			if e == nil {
				return nil // the initial values are done
			}
			if strings.Count(e.Key(), ".") != 1 {
				continue
			}
			if err := fn(e.Key(), e.Value()); err != nil {
				return err
			}
		}
	}
}

// SetLabels sets and removes labels of the node with key (<site>.<node>),
// atomically against concurrent writers.
func SetLabels(ctx context.Context, js jetstream.JetStream, key string, set map[string]string, remove []string) (map[string]string, error) {
	site, node, ok := strings.Cut(key, ".")
	if !ok {
		return nil, fmt.Errorf("node %q: want SITE.NODE", key)
	}
	if err := streams.ValidID("site", site); err != nil {
		return nil, err
	}
	if err := streams.ValidID("node", node); err != nil {
		return nil, err
	}
	kv, err := js.KeyValue(ctx, streams.LabelsBucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", streams.LabelsBucket, err)
	}
	for range 10 {
		var nl streams.NodeLabels
		var rev uint64
		e, err := kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return nil, err
		default:
			rev = e.Revision()
			if err := json.Unmarshal(e.Value(), &nl); err != nil {
				return nil, fmt.Errorf("labels of %s: %w", key, err)
			}
		}
		if nl.Labels == nil {
			nl.Labels = map[string]string{}
		}
		maps.Copy(nl.Labels, set)
		for _, k := range remove {
			delete(nl.Labels, k)
		}
		nl.Updated = time.Now().UTC()
		b, _ := json.Marshal(nl)
		if rev == 0 {
			_, err = kv.Create(ctx, key, b)
		} else {
			_, err = kv.Update(ctx, key, b, rev)
		}
		if err == nil {
			return nl.Labels, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !strings.Contains(err.Error(), "wrong last sequence") {
			return nil, err
		}
	}
	return nil, fmt.Errorf("labels of %s: too many concurrent writers", key)
}

// Statuses reads every node's status, sorted by key, in one pass of a
// watcher rather than a Get per key (the dashboard and the alert rules read
// it every few seconds).
func Statuses(ctx context.Context, js jetstream.JetStream) ([]streams.NodeStatus, error) {
	var out []streams.NodeStatus
	err := each(ctx, js, streams.StatusBucket, func(_ string, v []byte) error {
		var ns streams.NodeStatus
		if json.Unmarshal(v, &ns) == nil {
			out = append(out, ns)
		}
		return nil
	})
	sort.Slice(out, func(i, j int) bool {
		return streams.Key(out[i].Site, out[i].Node) < streams.Key(out[j].Site, out[j].Node)
	})
	return out, err
}
