package accounts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
)

// env is a hub in operator mode with TLS on both listeners.
type env struct {
	t   testing.TB
	dir string
	op  *accounts.Operator
	pki tlsfiles.Files
	hub *hub.Hub
	log *logBuf // the hub's log
}

func newEnv(t testing.TB, tenants ...string) *env {
	t.Helper()
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", tenants)
	check.NoError(t, err)
	pki, err := tlsfiles.WriteTestPKI(dir)
	check.NoError(t, err)
	e := &env{t: t, dir: dir, op: op, pki: pki, log: &logBuf{}}
	store := filepath.Join(dir, "hub")
	h, err := hub.Start(context.Background(), hub.Config{
		StoreDir: store, Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1",
		Log: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Options: func(o *server.Options) error {
			if err := op.HubOptions(filepath.Join(store, "resolver"))(o); err != nil {
				return err
			}
			return pki.Hub(o)
		},
		ClientOptions: []nats.Option{nats.UserCredentials(op.AdminCreds(tenants[0]))},
	})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	e.hub = h
	for _, tn := range tenants[1:] {
		nc, err := h.Connect(nats.UserCredentials(op.AdminCreds(tn)))
		check.NoError(t, err)
		js, _ := jetstream.New(nc)
		check.NoError(t, hub.Bootstrap(context.Background(), js, 1))
		nc.Close()
	}
	return e
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError}))
}

// tls is the client option that verifies the test CA.
func (e *env) tls() nats.Option {
	o, err := e.pki.NATS()
	check.NoError(e.t, err)
	return o
}

// admin is a tenant administrator's JetStream at the hub, over TLS.
func (e *env) admin(tenant string) (*nats.Conn, jetstream.JetStream) {
	e.t.Helper()
	nc, js, err := e.op.AdminJetStream(e.hub.ClientURL(), tenant, e.tls())
	check.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	return nc, js
}

// addSite issues a site's bundle and registers it, as `alpha site add` does.
func (e *env) addSite(site, tenant string, nodes ...string) string {
	e.t.Helper()
	out := filepath.Join(e.dir, "bundle-"+site+"-"+tenant)
	_, err := e.op.AddSite(site, tenant, nodes, out)
	check.NoError(e.t, err)
	_, js := e.admin(tenant)
	check.NoError(e.t, accounts.RegisterSite(context.Background(), js, site))
	return out
}

// logBuf collects a server's log lines.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.buf.String(), s)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startLeaf runs a site leaf from its bundle under operator mode and TLS.
func (e *env) startLeaf(bundle string, log *logBuf) *leaf.Leaf {
	e.t.Helper()
	setup, err := accounts.Leaf(bundle)
	check.NoError(e.t, err)
	cfg, err := accounts.LoadSite(bundle)
	check.NoError(e.t, err)
	lg := quiet()
	if log != nil {
		lg = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	l, err := leaf.Start(context.Background(), leaf.Config{
		Site: cfg.Site, HubURLs: []string{e.hub.LeafURL()}, StoreDir: e.t.TempDir(), Listen: "127.0.0.1:-1", Log: lg,
		Options: func(o *server.Options) error {
			if err := setup.Options(o); err != nil {
				return err
			}
			return e.pki.Leaf(o)
		},
		ClientOptions: setup.ClientOptions,
		NoRegister:    true,
	})
	check.NoError(e.t, err)
	e.t.Cleanup(l.Shutdown)
	return l
}

// agentConn connects to a leaf as a node's agent.
func (e *env) agentConn(l *leaf.Leaf, bundle, site, node string, extra ...nats.Option) *nats.Conn {
	e.t.Helper()
	opts, err := accounts.AgentOptions(site, node, filepath.Join(bundle, accounts.AgentSeedFile(node)))
	check.NoError(e.t, err)
	nc, err := nats.Connect(l.ClientURL(), append(append(opts, e.tls()), extra...)...)
	check.NoError(e.t, err)
	e.t.Cleanup(nc.Close)
	return nc
}

type urlT = url.URL

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	check.NoError(t, err)
	return u
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
