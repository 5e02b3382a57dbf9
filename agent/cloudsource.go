package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/streams"
)

// cloudSource serves the node's cloud outputs from the site's mirror of the
// hub's cloud bucket once the agent is connected, and from a copy on the
// node's disk before that: a node that boots with its leaf down must not
// drop (and so stop) workloads just because it cannot read their outputs.
//
// With verify set (production), only outputs the hub signed for this node
// count; a refused value leaves the last good status in use, from memory or
// from the node's copy, which holds only accepted statuses.
type cloudSource struct {
	dir    string
	verify cloudref.Verify

	mu    sync.Mutex
	kv    *cloudref.KV
	ready chan struct{}
}

var _ cloudref.Source = (*cloudSource)(nil)
var _ cloudref.Notifier = (*cloudSource)(nil)

func newCloudSource(dir string, verify cloudref.Verify) (*cloudSource, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &cloudSource{dir: dir, verify: verify, ready: make(chan struct{})}, nil
}

// cloudVerify is how an agent checks cloud outputs: cfg.VerifyCloud; an
// agent that verifies blueprints but was given no hub outputs key refuses
// every output rather than trust the bucket (a tenant admin writes it too).
func cloudVerify(cfg Config) cloudref.Verify {
	switch {
	case cfg.VerifyCloud != nil:
		return cfg.VerifyCloud
	case cfg.Verify != nil:
		return func(key string, revision uint64, _ []byte) ([]byte, error) {
			return nil, fmt.Errorf("no trusted hub outputs key (hub-outputs.pub in the site bundle); outputs of %s are not checked, so not used", key)
		}
	}
	return nil
}

// connect hands the source the site's bucket.
func (c *cloudSource) connect(kv *cloudref.KV) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kv == nil {
		if c.verify != nil {
			kv = kv.Verified(c.verify, c.stored)
		}
		c.kv = kv
		close(c.ready)
	}
}

func (c *cloudSource) live() *cloudref.KV {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.kv
}

func (c *cloudSource) path(config string) string { return filepath.Join(c.dir, config+".json") }

// stored is the node's copy of a configuration's last accepted status.
func (c *cloudSource) stored(config string) *streams.CloudStatus {
	st, err := c.readCopy(config)
	if err != nil {
		return nil
	}
	return st
}

func (c *cloudSource) readCopy(config string) (*streams.CloudStatus, error) {
	b, err := os.ReadFile(c.path(config))
	if err != nil {
		return nil, err
	}
	var st streams.CloudStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// Entry reads the site's copy, keeping the node's copy current; without the
// site it answers from the node's copy. A refused value is answered with
// the last good status and the refusal, and never reaches the node's copy.
func (c *cloudSource) Entry(ctx context.Context, config, digest string) (*streams.CloudStatus, error) {
	path := c.path(config)
	if kv := c.live(); kv != nil {
		st, err := kv.Entry(ctx, config, digest)
		if errors.Is(err, cloudref.ErrRefused) {
			return st, err
		}
		if err == nil {
			if st == nil {
				fileio.Remove(path)
			} else if b, err := json.Marshal(st); err == nil {
				fileio.WriteFile(path, b, 0o600)
			}
			return st, nil
		}
	}
	st, err := c.readCopy(config)
	if errors.Is(err, os.ErrNotExist) {
		if c.live() == nil {
			return nil, errors.New("site not reachable yet and no copy on this node")
		}
		return nil, nil
	}
	return st, err
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
