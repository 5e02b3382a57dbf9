package leaf_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// A mirror's reset request sent while the uplink is down is lost, and
// nats-server does not ask again when the link returns while it still awaits
// the answer: it waits out its wait and its retry spacing first (2.1 s after the request
// in this test without the resend, 0.5 s with it). The leaf sends the lost
// request again when the link returns, and the hub's answer reaches the
// mirror on the lost request's own reply subject, which nothing but a
// resend can make happen. Production mode: operator, TLS, the site's own
// account at the hub, the link through a proxy the test cuts.
func TestLostResetIsResentWhenLinkReturns(t *testing.T) {
	ctx := context.Background()
	// The link must come back while the mirror still awaits the lost
	// answer (1.5 s at a leaf): on a loaded machine the reconnect alone can
	// take longer. With 10 s the test does not depend on the machine's
	// speed; what it asserts (the lost request answered) does not change.
	t.Cleanup(leaf.SetResetAnswerWait(10 * time.Second))
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"t1"}})
	bundle := p.AddSite("a", "t1", nil, "n1")
	hu, err := url.Parse(p.LeafURL())
	check.NoError(t, err)
	proxy, err := chaos.NewProxy("127.0.0.1:0", hu.Host)
	check.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	log := &check.Buffer{}
	l, _ := p.StartLeaf(bundle, prodtest.LeafOptions{HubURL: "nats-leaf://" + proxy.Addr(), Log: log})
	site := p.LeafJetStream(l)
	var mu sync.Mutex
	answered := map[string]bool{}
	_, err = site.Conn().Subscribe("$JSC.R."+streams.HubDomain+".>", func(m *nats.Msg) {
		mu.Lock()
		answered[m.Subject] = true
		mu.Unlock()
	})
	check.NoError(t, err)

	_, hjs := p.Admin("t1")
	hbp, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	sbp, err := site.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	has := func(rev uint64) func() error {
		return func() error {
			e, err := sbp.Get(ctx, "a.n1")
			if err != nil {
				return err
			}
			if e.Revision() < rev {
				return fmt.Errorf("site holds revision %d, want %d", e.Revision(), rev)
			}
			return nil
		}
	}
	rev, err := hbp.Put(ctx, "a.n1", []byte("before"))
	check.NoError(t, err)
	check.For(t, 30*time.Second, 20*time.Millisecond, has(rev))

	proxy.Set(chaos.Cut)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if l.Connected() {
			return errors.New("uplink still up")
		}
		return nil
	})
	rev, err = hbp.Put(ctx, "a.n1", []byte("during the outage"))
	check.NoError(t, err)
	put := time.Now()
	// The mirror notices the silence (nats-server: 10 s) and asks for a
	// reset, into the outage: it awaits the answer on a reply subscription.
	var lost string
	check.For(t, 60*time.Second, 10*time.Millisecond, func() error {
		if lost = awaitedReply(t, l); lost == "" {
			return errors.New("the mirror awaits no reset")
		}
		return nil
	})
	asked := time.Now()
	proxy.Set(chaos.Up)
	restored := time.Now()
	check.For(t, 60*time.Second, 10*time.Millisecond, has(rev))
	t.Logf("reset request %v after the put; revision at the site %v after the link's return, %v after the request",
		asked.Sub(put).Round(time.Millisecond), time.Since(restored).Round(time.Millisecond), time.Since(asked).Round(time.Millisecond))
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !answered[lost] {
			return fmt.Errorf("the hub never answered the request lost in the outage (reply %s): it was not sent again", lost)
		}
		return nil
	})
	if log.Count("resent a mirror's reset lost while the uplink was down") == 0 {
		t.Error("the leaf logged no resent request")
	}
}

// awaitedReply is the reply subject on which site a's blueprints mirror
// awaits a reset's answer, "" when it awaits none.
func awaitedReply(t *testing.T, l *leaf.Leaf) string {
	t.Helper()
	sz, err := l.Server.Subsz(&server.SubszOptions{Subscriptions: true, Limit: 1 << 16})
	check.NoError(t, err)
	for _, sd := range sz.Subs {
		if strings.HasPrefix(sd.Subject, "$JSC.R."+streams.HubDomain+".") && strings.Contains(sd.Subject, ".KV_blueprints.mirror-a-blueprints.") {
			return sd.Subject
		}
	}
	return ""
}
