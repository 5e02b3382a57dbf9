package agent_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/maintenance"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// TestHoldOutlivesAgentRestartWithoutBucket: an operator froze the node; the
// agent restarts after the site's holds bucket was deleted (by mistake, or
// by someone who wants the agent's hands back on the node). The node stays
// frozen: neither a drifted file is repaired nor a new revision applied,
// until the hold is released.
func TestHoldOutlivesAgentRestartWithoutBucket(t *testing.T) {
	ctx := context.Background()
	h := stack.Hub(t)
	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	root, state := t.TempDir(), t.TempDir()
	file := filepath.Join(root, "etc/app/hello.conf")
	blueprints := stack.KV(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	status := stack.KV(t, l.ClientURL(), "s1", streams.StatusBucket)
	nc, err := nats.Connect(l.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	site, err := jetstream.NewWithDomain(nc, "s1")
	check.NoError(t, err)
	holds := stack.KV(t, l.ClientURL(), "s1", streams.HoldsBucket)

	_, stop := stack.Agent(t, "s1", "n1", l.ClientURL(), root, state)
	_, err = blueprints.Put(ctx, "s1.n1", []byte(stack.Doc("hello", "/etc/app/hello.conf", "greeting=hi\n")))
	check.NoError(t, err)
	stack.WaitFile(t, 10*time.Second, file, "greeting=hi\n")
	hold, err := maintenance.NewHold("s1", "n1", time.Now(), time.Hour, "debugging the meter", "ops", nil)
	check.NoError(t, err)
	check.NoError(t, maintenance.Put(ctx, holds, hold))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if ns, err := stack.NodeStatus(status, "s1", "n1"); err != nil || ns.Hold == "" {
			return fmt.Errorf("agent does not show the hold: %+v %v", ns, err)
		}
		return nil
	})
	stop()

	check.NoError(t, site.DeleteKeyValue(ctx, streams.HoldsBucket))
	check.NoError(t, os.WriteFile(file, []byte("tampered\n"), 0o644))
	r2, err := blueprints.Put(ctx, "s1.n1", []byte(stack.Doc("hello", "/etc/app/hello.conf", "greeting=hello\n")))
	check.NoError(t, err)
	restarted := time.Now()
	stack.Agent(t, "s1", "n1", l.ClientURL(), root, state)
	// The restarted agent has seen r2 and reports the hold: its pass is
	// done, held.
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(status, "s1", "n1")
		if err != nil || ns.Reported.Before(restarted) || ns.DesiredRevision != r2 || ns.Hold == "" {
			return fmt.Errorf("restarted agent reports %+v (%v), want r%d desired under a hold", ns, err, r2)
		}
		return nil
	})
	check.NoError(t, stack.FileIs(file, "tampered\n"))

	// A release in the bucket made again ends the hold.
	holds, err = maintenance.EnsureBucket(ctx, site)
	check.NoError(t, err)
	check.NoError(t, maintenance.Release(ctx, holds, "s1", "n1"))
	stack.WaitFile(t, 20*time.Second, file, "greeting=hello\n")
}
