package accounts_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
)

// env is a hub in operator mode with TLS on both listeners (prodtest),
// under the names these tests use.
type env struct {
	t   testing.TB
	dir string
	op  *accounts.Operator
	pki tlsfiles.Files
	hub *hub.Hub
	log *check.Buffer // the hub's log
	p   *prodtest.Hub
}

func newEnv(t testing.TB, tenants ...string) *env {
	t.Helper()
	lb := &check.Buffer{}
	p := prodtest.Start(t, prodtest.Options{Tenants: tenants, Log: lb})
	return &env{t: t, dir: p.Dir, op: p.Op, pki: p.PKI, hub: p.Hub, log: lb, p: p}
}

func quiet() *slog.Logger {
	return slog.New(slog.NewTextHandler(&bytes.Buffer{}, &slog.HandlerOptions{Level: slog.LevelError}))
}

// tls is the client option that verifies the test CA.
func (e *env) tls() nats.Option { return e.p.TLS() }

// admin is a tenant administrator's JetStream at the hub, over TLS.
func (e *env) admin(tenant string) (*nats.Conn, jetstream.JetStream) { return e.p.Admin(tenant) }

// addSite issues a site's bundle and registers it, as `alpha site add` does.
func (e *env) addSite(site, tenant string, nodes ...string) string {
	e.t.Helper()
	return e.p.AddSite(site, tenant, nil, nodes...)
}

// startLeaf runs a site leaf from its bundle under operator mode and TLS
// (agents connect to it with TLS too).
func (e *env) startLeaf(bundle string, log *check.Buffer) *leaf.Leaf {
	e.t.Helper()
	o := prodtest.LeafOptions{ServeTLS: true}
	if log != nil {
		o.Log = log
	}
	l, _ := e.p.StartLeaf(bundle, o)
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
