package artifacts_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// TestFetchThroughSiteLeaf fetches across the JetStream domain boundary the
// way an agent does: connected to its site's leaf node (domain "site1"),
// reading the hub's bucket (domain "hub").
func TestFetchThroughSiteLeaf(t *testing.T) {
	hubOpts := &server.Options{JetStreamDomain: "hub",
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: -1, NoAdvertise: true}}
	hub := startServer(t, hubOpts)
	hnc, err := nats.Connect(hub.ClientURL())
	check.NoError(t, err)
	defer hnc.Close()
	content := bytes.Repeat([]byte{7}, 3<<20)
	sum := sha256.Sum256(content)
	_, err = artifacts.Put(context.Background(), hnc, "", "model.tar", bytes.NewReader(content))
	check.NoError(t, err)

	u, _ := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", hubOpts.LeafNode.Port))
	leaf := startServer(t, &server.Options{JetStreamDomain: "site1",
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if leaf.NumLeafNodes() != 1 {
			return fmt.Errorf("leaf not connected")
		}
		return nil
	})
	nc, err := nats.Connect(leaf.ClientURL())
	check.NoError(t, err)
	defer nc.Close()
	c, err := artifacts.NewCache(t.TempDir(), artifacts.NewObjectStore(nc, "", ""), nil)
	check.NoError(t, err)
	a := blueprint.Artifact{Name: "model.tar", SHA256: hex.EncodeToString(sum[:])}
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		_, err := c.Fetch(context.Background(), a)
		return err
	})

	// The uplink goes down: cached artifacts are served, others fail fast
	// with an error that says why, rather than hanging the agent.
	hub.Shutdown()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if leaf.NumLeafNodes() != 0 {
			return fmt.Errorf("leaf still connected")
		}
		return nil
	})
	_, err = c.Fetch(context.Background(), a)
	check.NoError(t, err)
	start := time.Now()
	_, err = c.Fetch(context.Background(), blueprint.Artifact{Name: "other", SHA256: hex.EncodeToString(make([]byte, 32))})
	if err == nil {
		t.Fatal("an uncached artifact was fetched with the hub down")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("fetch with the hub down took %v", d)
	}
	t.Logf("offline miss after %v: %v", time.Since(start), err)
}

func startServer(t *testing.T, o *server.Options) *server.Server {
	t.Helper()
	o.Host, o.Port, o.JetStream, o.StoreDir, o.NoLog, o.NoSigs = "127.0.0.1", -1, true, t.TempDir(), true, true
	s, err := server.NewServer(o)
	check.NoError(t, err)
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}
