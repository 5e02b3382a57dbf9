package agent

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/streams"
)

// cloudSource serves the node's cloud outputs from the site's mirror of the
// hub's cloud bucket once the agent is connected, and from a copy on the
// node's disk before that: a node that boots with its leaf down must not
// drop (and so stop) workloads just because it cannot read their outputs.
type cloudSource struct {
	dir string

	mu    sync.Mutex
	kv    *cloudref.KV
	ready chan struct{}
}

var _ cloudref.Source = (*cloudSource)(nil)
var _ cloudref.Notifier = (*cloudSource)(nil)

func newCloudSource(dir string) (*cloudSource, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &cloudSource{dir: dir, ready: make(chan struct{})}, nil
}

// connect hands the source the site's bucket.
func (c *cloudSource) connect(kv *cloudref.KV) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv == nil {
		c.kv = kv
		close(c.ready)
	}
}

func (c *cloudSource) live() *cloudref.KV {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kv
}

// Entry reads the site's copy, keeping the node's copy current; without the
// site it answers from the node's copy.
func (c *cloudSource) Entry(ctx context.Context, config string) (*streams.CloudStatus, error) {
	path := filepath.Join(c.dir, config+".json")
	if kv := c.live(); kv != nil {
		st, err := kv.Entry(ctx, config)
		if err == nil {
			if st == nil {
				os.Remove(path)
			} else if b, err := json.Marshal(st); err == nil {
				engine.WriteFileAtomic(path, b, 0o600)
			}
			return st, nil
		}
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if c.live() == nil {
			return nil, errors.New("site not reachable yet and no copy on this node")
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var st streams.CloudStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Watch follows the site's bucket once connected.
func (c *cloudSource) Watch(ctx context.Context, notify func()) error {
	select {
	case <-ctx.Done():
		return nil
	case <-c.ready:
	}
	notify()
	return c.live().Watch(ctx, notify)
}
