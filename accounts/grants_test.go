package accounts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// grantsSite is a production site (operator mode, TLS) with two nodes, the
// hub's stores seeded with something of every kind the site mirrors.
type grantsSite struct {
	e      *env
	bundle string
	leaf   *leaf.Leaf
}

func newGrantsSite(t *testing.T) *grantsSite {
	t.Helper()
	e := newEnv(t, "acme")
	g := &grantsSite{e: e, bundle: e.addSite("s1", "acme", "n1", "n2")}
	e.addSite("s2", "acme", "n1") // a neighbour whose keys must stay out of reach
	ctx := context.Background()
	nc, js := e.admin("acme")
	for _, key := range []string{"s1.n1", "s1.n2", "s2.n1"} {
		kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
		check.NoError(t, err)
		_, err = kv.PutString(ctx, key, "bp of "+key)
		check.NoError(t, err)
		ckv, err := js.KeyValue(ctx, streams.CloudBucket)
		check.NoError(t, err)
		_, err = ckv.PutString(ctx, key+".logs", `{"phase":"applied"}`)
		check.NoError(t, err)
	}
	obs, err := js.ObjectStore(ctx, streams.ArtifactsBucket)
	check.NoError(t, err)
	_, err = obs.PutBytes(ctx, "tool", bytes.Repeat([]byte("x"), 300<<10)) // several chunks
	check.NoError(t, err)
	_ = nc
	g.leaf = e.startLeaf(g.bundle, nil)
	return g
}

// conn connects to the site leaf with a bundle seed, noting every refusal
// the leaf reports.
func (g *grantsSite) conn(t *testing.T, seed, inbox string) (*nats.Conn, *natsutil.Denials) {
	t.Helper()
	d := &natsutil.Denials{}
	o, err := nats.NkeyOptionFromSeed(filepath.Join(g.bundle, seed))
	check.NoError(t, err)
	nc, err := nats.Connect(g.leaf.ClientURL(), o, g.e.tls(), nats.CustomInboxPrefix(inbox), nats.ErrorHandler(d.Handler(nil)))
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc, d
}

// concrete turns a contract filter into one subject or key it covers.
func concrete(filter string) string {
	filter = strings.ReplaceAll(filter, "*", "n1")
	return strings.ReplaceAll(filter, ">", "probe.x")
}

// perform does op the way the roles' code does it, through the site's
// domain, and returns an error if any step fails.
func perform(ctx context.Context, nc *nats.Conn, site string, op streams.Op) error {
	js, err := jetstream.NewWithDomain(nc, site)
	if err != nil {
		return err
	}
	switch op.Kind {
	case streams.KVRead, streams.KVWrite:
		kv, err := js.KeyValue(ctx, op.Name)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		key := concrete(op.Filter)
		if op.Kind == streams.KVWrite {
			if _, err := kv.PutString(ctx, key, "v"); err != nil {
				return fmt.Errorf("put %s: %w", key, err)
			}
		}
		if _, err := kv.Get(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("get %s: %w", key, err)
		}
		w, err := kv.Watch(ctx, op.Filter)
		if err != nil {
			return fmt.Errorf("watch %s: %w", op.Filter, err)
		}
		for e := range w.Updates() {
			if e == nil {
				break
			}
		}
		if err := w.Stop(); err != nil {
			return fmt.Errorf("stop watch: %w", err)
		}
		if op.Kind == streams.KVWrite {
			if _, err := kv.ListKeysFiltered(ctx, op.Filter); err != nil {
				return fmt.Errorf("list %s: %w", op.Filter, err)
			}
			if err := kv.Delete(ctx, key); err != nil {
				return fmt.Errorf("delete %s: %w", key, err)
			}
		}
	case streams.ObjectRead:
		obs, err := js.ObjectStore(ctx, op.Name)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		b, err := obs.GetBytes(ctx, "tool")
		if err != nil {
			return fmt.Errorf("get tool: %w", err)
		}
		if len(b) != 300<<10 {
			return fmt.Errorf("tool: %d bytes, want %d", len(b), 300<<10)
		}
	case streams.Publish:
		subj := concrete(op.Filter)
		m := nats.NewMsg(subj)
		m.Header.Set(jetstream.MsgIDHeader, subj+time.Now().String())
		if _, err := js.PublishMsg(ctx, m); err != nil {
			return fmt.Errorf("publish %s: %w", subj, err)
		}
	case streams.Request:
		if _, err := nc.RequestWithContext(ctx, concrete(op.Filter), nil); err != nil {
			return fmt.Errorf("request %s: %w", op.Filter, err)
		}
	case streams.StreamRead:
		c, err := js.OrderedConsumer(ctx, op.Name, jetstream.OrderedConsumerConfig{FilterSubjects: []string{op.Filter}})
		if err != nil {
			return fmt.Errorf("read %s %s: %w", op.Name, op.Filter, err)
		}
		if _, err := c.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond)); err != nil {
			return fmt.Errorf("fetch %s %s: %w", op.Name, op.Filter, err)
		}
	default:
		return fmt.Errorf("no way to perform %q", op.Kind)
	}
	return nil
}

// exerciseOps performs each of a role's contract operations with its real
// credentials and fails on any error or any refusal the leaf reported.
func exerciseOps(t *testing.T, nc *nats.Conn, d *natsutil.Denials, site string, ops []streams.Op) {
	t.Helper()
	for _, op := range ops {
		name := fmt.Sprintf("%s %s %s", op.Kind, op.Name, op.Filter)
		var last error
		// The mirrors fill in the background after the leaf starts.
		check.For(t, 15*time.Second, 100*time.Millisecond, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			last = perform(ctx, nc, site, op)
			if last != nil {
				return fmt.Errorf("%s (%s): %w", name, op.Why, last)
			}
			return nil
		})
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// Refusals arrive asynchronously; a round trip orders them before the
	// check.
	check.NoError(t, nc.Flush())
	if denied := d.Recent(time.Now()); len(denied) > 0 {
		t.Fatalf("the leaf refused operations of the contract:\n%s", strings.Join(denied, "\n"))
	}
}

// mustBeDenied asserts fn fails and the leaf reports a refusal or the data
// never arrives, for operations a role must never perform.
func mustBeDenied(t *testing.T, what string, nc *nats.Conn, d *natsutil.Denials, fn func(ctx context.Context) error) {
	t.Helper()
	before := len(d.Recent(time.Now()))
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	defer cancel()
	err := fn(ctx)
	nc.Flush()
	if err == nil {
		t.Errorf("%s: allowed", what)
		return
	}
	if after := len(d.Recent(time.Now())); after <= before && !errors.Is(err, context.DeadlineExceeded) &&
		!errors.Is(err, nats.ErrTimeout) && !errors.Is(err, nats.ErrNoResponders) {
		t.Logf("%s: refused without a permission error: %v", what, err)
	}
}

// TestGrantsFollowTheContract performs, for each role at a production site,
// every operation the contract (streams.AgentOps, SiteOperatorOps) lists
// with the role's own credentials, and a list of operations the role must
// never perform. A subject the code uses without a grant fails here.
func TestGrantsFollowTheContract(t *testing.T) {
	g := newGrantsSite(t)
	site := "s1"

	t.Run("agent", func(t *testing.T) {
		nc, d := g.conn(t, accounts.AgentSeedFile("n1"), streams.Inbox(site, "n1"))
		exerciseOps(t, nc, d, site, streams.AgentOps(site, "n1"))
		js, _ := jetstream.NewWithDomain(nc, site)
		kvGet := func(bucket, key string) func(context.Context) error {
			return func(ctx context.Context) error {
				kv, err := js.KeyValue(ctx, bucket)
				if err != nil {
					return err
				}
				e, err := kv.Get(ctx, key)
				if err == nil {
					return fmt.Errorf("read %q", e.Value())
				}
				return err
			}
		}
		kvPut := func(bucket, key string) func(context.Context) error {
			return func(ctx context.Context) error {
				kv, err := js.KeyValue(ctx, bucket)
				if err != nil {
					return err
				}
				_, err = kv.PutString(ctx, key, "forged")
				return err
			}
		}
		mustBeDenied(t, "read another node's blueprint", nc, d, kvGet(streams.BlueprintsBucket, "s1.n2"))
		mustBeDenied(t, "read another node's cloud outputs", nc, d, kvGet(streams.CloudBucket, "s1.n2.logs"))
		mustBeDenied(t, "write another node's status", nc, d, kvPut(streams.StatusBucket, "s1.n2"))
		mustBeDenied(t, "set its own hold", nc, d, kvPut(streams.HoldsBucket, "s1.n1"))
		mustBeDenied(t, "publish another node's telemetry", nc, d, func(ctx context.Context) error {
			_, err := js.Publish(ctx, "telemetry.s1.n2.host.cpu", []byte("1"))
			return err
		})
		mustBeDenied(t, "create a bucket", nc, d, func(ctx context.Context) error {
			_, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "mine"})
			return err
		})
		mustBeDenied(t, "delete the uplink consumer", nc, d, func(ctx context.Context) error {
			return js.DeleteConsumer(ctx, streams.TelemetryStream, streams.UplinkConsumer(streams.TelemetryStream))
		})
		mustBeDenied(t, "reach the hub's API", nc, d, func(ctx context.Context) error {
			hub, _ := jetstream.NewWithDomain(nc, streams.HubDomain)
			_, err := hub.AccountInfo(ctx)
			return err
		})
	})

	t.Run("site operator", func(t *testing.T) {
		nc, d := g.conn(t, accounts.SiteOperatorSeedFile, streams.Inbox(site, streams.SiteOperator))
		exerciseOps(t, nc, d, site, streams.SiteOperatorOps(site))
		js, _ := jetstream.NewWithDomain(nc, site)
		mustBeDenied(t, "read a blueprint", nc, d, func(ctx context.Context) error {
			kv, err := js.KeyValue(ctx, streams.BlueprintsBucket)
			if err != nil {
				return err
			}
			_, err = kv.Get(ctx, "s1.n1")
			return err
		})
		mustBeDenied(t, "write a node's status", nc, d, func(ctx context.Context) error {
			kv, err := js.KeyValue(ctx, streams.StatusBucket)
			if err != nil {
				return err
			}
			_, err = kv.PutString(ctx, "s1.n1", "forged")
			return err
		})
		mustBeDenied(t, "publish telemetry", nc, d, func(ctx context.Context) error {
			_, err := js.Publish(ctx, "telemetry.s1.n1.host.cpu", []byte("1"))
			return err
		})
		mustBeDenied(t, "delete the holds bucket", nc, d, func(ctx context.Context) error {
			return js.DeleteKeyValue(ctx, streams.HoldsBucket)
		})
	})

	t.Run("leaf", func(t *testing.T) {
		// The leaf's grants at the hub carry every mirrored store down and
		// every uplink up: each arrives, and the hub logged no violation.
		nc, _ := g.conn(t, accounts.AgentSeedFile("n2"), streams.Inbox(site, "n2"))
		ctx := context.Background()
		js, _ := jetstream.NewWithDomain(nc, site)
		kv, err := js.KeyValue(ctx, streams.StatusBucket)
		check.NoError(t, err)
		_, err = kv.PutString(ctx, "s1.n2", `{"site":"s1","node":"n2","phase":"Converged"}`)
		check.NoError(t, err)
		_, err = js.Publish(ctx, "events.s1.n2.probe", []byte("e"))
		check.NoError(t, err)
		_, err = js.Publish(ctx, "telemetry.s1.n2.probe", []byte("m"))
		check.NoError(t, err)
		_, hub := g.e.admin("acme")
		check.For(t, 15*time.Second, 100*time.Millisecond, func() error {
			for _, s := range []string{streams.StatusStream, streams.EventsStream, streams.TelemetryStream} {
				st, err := hub.Stream(ctx, s)
				if err != nil {
					return err
				}
				subj := map[string]string{streams.StatusStream: "$KV.status.s1.n2", streams.EventsStream: "events.s1.n2.probe",
					streams.TelemetryStream: "telemetry.s1.n2.probe"}[s]
				if _, err := st.GetLastMsgForSubject(ctx, subj); err != nil {
					return fmt.Errorf("hub %s has no %s: %w", s, subj, err)
				}
			}
			return nil
		})
		for _, needle := range []string{"Permissions Violation", "permissions violation"} {
			if n := g.e.log.Count(needle); n > 0 {
				t.Fatalf("hub logged %d %q lines:\n%s", n, needle, g.e.log)
			}
		}
	})
}
