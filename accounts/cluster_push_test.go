package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// member starts a hub cluster member in operator mode with TLS on clients
// and routes, its resolver in store seeded from op's directory (newer JWTs
// kept), routed to routes.
func member(t *testing.T, op *accounts.Operator, pki tlsfiles.Files, name, store string, routes ...string) *server.Server {
	t.Helper()
	opts := &server.Options{ServerName: name, Host: "127.0.0.1", Port: -1, NoSigs: true}
	opts.Cluster.Name = "hub"
	opts.Cluster.Host, opts.Cluster.Port = "127.0.0.1", -1
	for _, r := range routes {
		u, err := url.Parse(r)
		check.NoError(t, err)
		opts.Routes = append(opts.Routes, u)
	}
	check.NoError(t, op.HubOptions(store)(opts))
	check.NoError(t, pki.Hub(opts))
	rt, err := pki.Route()
	check.NoError(t, err)
	opts.Cluster.TLSConfig, opts.Cluster.TLSTimeout = rt, 5
	s, err := server.NewServer(opts)
	check.NoError(t, err)
	check.NoError(t, natsutil.Start(s, quiet()))
	t.Cleanup(s.Shutdown)
	return s
}

// In a hub cluster every member answers a lookup with its own copy. A
// member that was down while a revocation was pushed holds the old account
// until the resolvers sync (every 2 min). A push from a stale operator
// directory through that member must still be refused, because the other
// member holds the revocation. The victim's view: the revoked user stays
// out at the member that had it, and once the current directory pushes, at
// both.
func TestStaleClusterMemberCannotLetAStalePushThrough(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "op")
	op, err := accounts.Init(dir, "o", []string{"t1"})
	check.NoError(t, err)
	pki, err := testpki.Write(t.TempDir())
	check.NoError(t, err)
	tlsOpt, err := pki.NATS()
	check.NoError(t, err)
	creds := filepath.Join(t.TempDir(), "u.creds")
	revoked, err := op.IssueUser("t1", "stolen", creds, jwt.Permissions{})
	check.NoError(t, err)
	stale := filepath.Join(t.TempDir(), "stale")
	check.NoError(t, os.CopyFS(stale, os.DirFS(dir)))
	sop, err := accounts.Load(stale)
	check.NoError(t, err)

	a := member(t, op, pki, "a", filepath.Join(t.TempDir(), "a"))
	route := fmt.Sprintf("nats-route://127.0.0.1:%d", a.ClusterAddr().Port)
	bStore := filepath.Join(t.TempDir(), "b")
	routed := func(ss ...*server.Server) {
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			for _, s := range ss {
				if s.NumRoutes() == 0 {
					return fmt.Errorf("%s has no route yet", s.Name())
				}
			}
			return nil
		})
	}
	b := member(t, sop, pki, "b", bStore, route)
	routed(a, b)
	// b goes down; the revocation is pushed to a alone.
	b.Shutdown()
	b.WaitForShutdown()
	check.NoError(t, op.Revoke("t1", revoked))
	check.NoError(t, op.Push(ctx, a.ClientURL(), "t1", tlsOpt))
	// Only s: a refused client would otherwise try the other members.
	admitted := func(s *server.Server) bool {
		nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds), tlsOpt, nats.NoReconnect(), nats.IgnoreDiscoveredServers())
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if admitted(a) {
			return errors.New("the revoked user is admitted at the member that was pushed the revocation")
		}
		return nil
	})
	// b comes back with what it had: its store and its operator directory.
	b = member(t, sop, pki, "b", bStore, route)
	routed(a, b)

	// The stale directory re-signs t1 (any change: a site add, a limit)
	// and pushes through b, which lacks the revocation.
	check.NoError(t, sop.Revoke("t1"))
	err = sop.Push(ctx, b.ClientURL(), "t1", tlsOpt)
	if err == nil || !strings.Contains(err.Error(), revoked) {
		t.Fatalf("push from a stale directory through the stale member: %v, want a refusal naming %s", err, revoked)
	}
	// The current directory's push goes through b and reaches both.
	check.NoError(t, op.Push(ctx, b.ClientURL(), "t1", tlsOpt))
	for _, s := range []*server.Server{a, b} {
		check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
			if admitted(s) {
				return fmt.Errorf("the revoked user is admitted at %s", s.Name())
			}
			return nil
		})
	}
}
