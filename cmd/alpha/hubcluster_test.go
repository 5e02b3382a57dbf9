package main

import (
	"context"
	"flag"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
)

// In operator mode a cluster member refuses to start with routes that a
// stranger could join: without the CA to verify members by, or without
// the cluster secret. (chaos/redteam proves what a rogue server gets.)
func TestHubClusterRefusesOpenRoutes(t *testing.T) {
	dir := t.TempDir()
	pki, err := testpki.Write(dir)
	check.NoError(t, err)
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"acme"})
	check.NoError(t, err)
	base := []string{"--store", filepath.Join(dir, "hub"), "--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1",
		"--cluster", "127.0.0.1:-1", "--routes", "nats-route://127.0.0.1:1", "--operator-dir", op.Dir,
		"--tls-cert", pki.Cert, "--tls-key", pki.Key, "--no-cloud"}
	run := func(args ...string) error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // a hub that did start stops at once
		return runHub(ctx, append(append([]string{}, base...), args...))
	}

	err = run()
	if err == nil || !strings.Contains(err.Error(), "--tls-ca is required with --cluster") {
		t.Errorf("--cluster without --tls-ca: %v", err)
	}
	check.NoError(t, os.Remove(op.ClusterSecret()))
	err = run("--tls-ca", pki.CA)
	if err == nil || !strings.Contains(err.Error(), op.ClusterSecret()) {
		t.Errorf("--cluster without the cluster secret: %v, want an error naming %s", err, op.ClusterSecret())
	}
}

// A member that lists itself among its routes, as NATS practice does,
// does not count itself as a peer.
func TestIsSelf(t *testing.T) {
	local := map[string]bool{"10.1.2.3": true}
	for _, c := range []struct {
		route, host string
		port        int
		want        bool
	}{
		{"nats-route://127.0.0.1:6222", "127.0.0.1", 6222, true},
		{"nats-route://localhost:6222", "127.0.0.1", 6222, true},
		{"nats-route://127.0.0.1:6223", "127.0.0.1", 6222, false},
		{"nats-route://127.0.0.2:6222", "127.0.0.1", 6222, false},
		{"nats-route://10.1.2.3:6222", "0.0.0.0", 6222, true},
		{"nats-route://127.0.0.1:6222", "0.0.0.0", 6222, true},
		{"nats-route://10.9.9.9:6222", "0.0.0.0", 6222, false},
		{"nats-route://10.1.2.3:6222", "10.1.2.4", 6222, false},
		{"nats-route://[::1]:6222", "::", 6222, true},
		{"nats-route://peer.example:6222", "0.0.0.0", 6222, false},
	} {
		u, err := url.Parse(c.route)
		check.NoError(t, err)
		if got := isSelf(u, c.host, c.port, local); got != c.want {
			t.Errorf("isSelf(%s, %s:%d) = %v, want %v", c.route, c.host, c.port, got, c.want)
		}
	}
}

// The routes a member keeps, and so the replicas it asks for, leave itself
// out: two members listing both get R2, not an R3 they cannot place.
func TestRoutesLeaveSelfOut(t *testing.T) {
	fs := flag.NewFlagSet("hub", flag.ContinueOnError)
	f := addClusterFlags(fs)
	check.NoError(t, fs.Parse([]string{"--name", "a", "--cluster", "127.0.0.1:16222",
		"--routes", "nats-route://127.0.0.1:16222,nats-route://127.0.0.1:16223"}))
	var cfg hub.Config
	check.NoError(t, f.apply(&cfg))
	check.Equal(t, cfg.Replicas, 2)
	var o server.Options
	check.NoError(t, cfg.Options(&o))
	if len(o.Routes) != 1 || o.Routes[0].Host != "127.0.0.1:16223" {
		t.Fatalf("routes %v, want only the peer's", o.Routes)
	}
}
