// Package stack starts real hubs, site leaves and agents in-process for
// tests, on loopback ports chosen by the kernel, and stops them on cleanup.
package stack

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// Log is the logger tests use: quiet unless ALPHA_TEST_LOG is set.
func Log() *slog.Logger {
	if os.Getenv("ALPHA_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(nopWriter{}, &slog.HandlerOptions{Level: slog.LevelError}))
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }

// Hub starts a hub.
func Hub(t testing.TB) *hub.Hub {
	t.Helper()
	h, err := hub.Start(context.Background(), hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: Log()})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	return h
}

// Leaf starts a site leaf connecting to hubURL, storing in store. The
// returned stop function is idempotent, so a test may stop it early.
func Leaf(t testing.TB, site, hubURL, store string) (*leaf.Leaf, func()) {
	t.Helper()
	return LeafAt(t, site, hubURL, store, "127.0.0.1:-1")
}

// LeafAt is Leaf on a fixed client address (a restarted leaf keeps its port
// so agents reconnect to it).
func LeafAt(t testing.TB, site, hubURL, store, listen string) (*leaf.Leaf, func()) {
	t.Helper()
	l, err := leaf.Start(context.Background(), leaf.Config{Site: site, HubURLs: []string{hubURL}, StoreDir: store, Listen: listen, Log: Log()})
	check.NoError(t, err)
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			l.Shutdown()
		}
	}
	t.Cleanup(stop)
	return l, stop
}

// Agent runs an agent until the returned stop function or cleanup.
func Agent(t testing.TB, site, node, natsURL, root, state string) (*agent.Agent, func()) {
	t.Helper()
	a, err := agent.New(agent.Config{Site: site, Node: node, NATSURL: natsURL, Root: root, StateDir: state, Log: Log(), Resync: 5 * time.Second})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return a, stop
}

// KV opens a bucket in a domain through url.
func KV(t testing.TB, url, domain, bucket string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect(url)
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, domain)
	check.NoError(t, err)
	var kv jetstream.KeyValue
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		kv, err = js.KeyValue(context.Background(), bucket)
		return err
	})
	return kv
}

// NodeStatus reads a node's status from a status bucket.
func NodeStatus(kv jetstream.KeyValue, site, node string) (streams.NodeStatus, error) {
	var ns streams.NodeStatus
	e, err := kv.Get(context.Background(), streams.Key(site, node))
	if err != nil {
		return ns, err
	}
	err = json.Unmarshal(e.Value(), &ns)
	return ns, err
}

// WaitFile waits until root/rel has exactly want as content.
func WaitFile(t testing.TB, total time.Duration, path, want string) {
	t.Helper()
	check.For(t, total, time.Millisecond, func() error { return FileIs(path, want) })
}

// FileIs checks a file's content.
func FileIs(path, want string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("%s holds %q, want %q", filepath.Base(path), b, want)
	}
	return nil
}

// NATS runs the real nats CLI against url and returns its combined output.
func NATS(t testing.TB, url string, args ...string) (string, error) {
	t.Helper()
	bin := NATSBinary(t)
	cmd := exec.Command(bin, append([]string{"--server", url, "--timeout", "5s"}, args...)...)
	cmd.Env = append(os.Environ(), "NATS_CONTEXT=", "HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// NATSBinary finds the nats CLI (PATH, then ~/go/bin); it skips locally and
// fails in CI when missing.
func NATSBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nats"); err == nil {
		return p
	}
	home, _ := os.UserHomeDir()
	p := filepath.Join(home, "go", "bin", "nats")
	_, err := os.Stat(p)
	check.Need(t, err == nil, "the nats CLI", "go install github.com/nats-io/natscli/nats@v0.5.1")
	return p
}

// Doc is a minimal blueprint with one file.
func Doc(name, path, content string) string {
	return fmt.Sprintf("apiVersion: alpha/v1\nkind: Blueprint\nmetadata:\n  name: %s\nspec:\n  files:\n    - path: %s\n      content: %q\n", name, path, content)
}
