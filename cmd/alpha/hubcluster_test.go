package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/accounts"
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
