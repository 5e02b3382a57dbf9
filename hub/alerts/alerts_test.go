package alerts_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/hub/sites"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// amAlert is what the webhook receives, as Alertmanager reads it.
type amAlert struct {
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	StartsAt    time.Time         `json:"startsAt"`
	EndsAt      time.Time         `json:"endsAt"`
}

// webhook is an Alertmanager stand-in that keeps every alert it was sent.
type webhook struct {
	mu  sync.Mutex
	got []amAlert
}

func (w *webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var list []amAlert
	if r.Method != http.MethodPost || json.Unmarshal(body, &list) != nil {
		http.Error(rw, "want a POST of a JSON list of alerts", http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.got = append(w.got, list...)
	w.mu.Unlock()
}

// find is the first alert received for site whose endsAt is set (resolved)
// or not (firing).
func (w *webhook) find(name, site string, resolved bool) (amAlert, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, a := range w.got {
		if a.Labels["alertname"] == name && a.Labels["site"] == site && !a.EndsAt.IsZero() == resolved {
			return a, true
		}
	}
	return amAlert{}, false
}

// TestStaleSiteFiresAndResolves cuts a production site's uplink: the stale
// alert fires only after the rule's time, reaches the bucket, EVENTS and the
// webhook, and resolves in all three when the link returns.
func TestStaleSiteFiresAndResolves(t *testing.T) {
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	bundle := p.AddSite("s1", "acme", nil, "n1")
	proxy, err := chaos.NewProxy("127.0.0.1:0", strings.TrimPrefix(p.Hub.LeafURL(), "nats-leaf://"))
	check.NoError(t, err)
	t.Cleanup(func() { proxy.Close() })
	p.StartLeaf(bundle, prodtest.LeafOptions{HubURL: "nats-leaf://" + proxy.Addr()})
	_, js := p.Admin("acme")
	ctx := context.Background()
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		links, err := sites.Links(ctx, js)
		if a, ok := links["s1"]; err != nil || !ok || sites.Stale(a) {
			return fmt.Errorf("site s1 not heard from yet: %v %v", links, err)
		}
		return nil
	})

	hook := &webhook{}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	// Longer than the forwarder's 3 s heartbeat, so "only after the
	// rule's time" is a bound that can fail.
	const after = 6 * time.Second
	cfg := alerts.Config{Webhook: srv.URL, Interval: alerts.Duration(200 * time.Millisecond),
		Rules: []alerts.Rule{{Kind: alerts.KindStale, For: alerts.Duration(after)}}}
	eng, err := alerts.Start(ctx, alerts.Options{Config: cfg, Tenants: []alerts.Tenant{{Name: "acme", JS: js}}, Log: stack.Log()})
	check.NoError(t, err)
	t.Cleanup(eng.Stop)
	events, err := js.Stream(ctx, streams.EventsStream)
	check.NoError(t, err)

	// Connected: a few evaluations go by and nothing fires.
	time.Sleep(time.Second) // a span in which nothing may happen, not a wait for something
	if f, _ := alerts.Firing(ctx, js); len(f) != 0 {
		t.Fatalf("alerts firing while the site is connected: %v", f)
	}

	// How long the hub had not heard from the site when the cut came:
	// silence counts from the last thing heard, and an idle site's
	// forwarder calls every 3 s or later under load.
	read := time.Now()
	links, err := sites.Links(ctx, js)
	check.NoError(t, err)
	age := links["s1"]
	cut := time.Now()
	proxy.Set(chaos.Cut)
	var fired streams.Alert
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		f, err := alerts.Firing(ctx, js)
		if err != nil {
			return err
		}
		for _, a := range f {
			fired = a
			return nil
		}
		return errors.New("no alert firing yet")
	})
	took := time.Since(cut)
	t.Logf("stale fired %v after the cut (rule: %v)", took.Round(10*time.Millisecond), after)
	// From the last thing heard to the firing: at least the rule's time,
	// less one evaluation interval.
	if silent := age + cut.Sub(read) + took; silent < after-200*time.Millisecond {
		t.Fatalf("stale fired %v after the cut, %v after the site was last heard, before the rule's %v of silence", took, silent, after)
	}
	check.Equal(t, fired.Name, "stale")
	check.Equal(t, fired.Site, "s1")
	check.Equal(t, fired.Tenant, "acme")
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, ok := hook.find("stale", "s1", false); !ok {
			return errors.New("webhook has no firing stale alert for s1")
		}
		return nil
	})
	firing := lastAlert(t, events, "alerts.s1._.stale")
	check.Equal(t, firing.State, streams.AlertFiring)

	proxy.Set(chaos.Up)
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		if f, err := alerts.Firing(ctx, js); err != nil || len(f) != 0 {
			return fmt.Errorf("still firing: %v %v", f, err)
		}
		return nil
	})
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		a, ok := hook.find("stale", "s1", true)
		if !ok {
			return errors.New("webhook has no resolved stale alert for s1")
		}
		if !a.StartsAt.Equal(fired.StartsAt) || a.EndsAt.Before(a.StartsAt) {
			return fmt.Errorf("resolved alert %+v does not close the one that fired at %v", a, fired.StartsAt)
		}
		return nil
	})
	resolved := lastAlert(t, events, "alerts.s1._.stale")
	check.Equal(t, resolved.State, streams.AlertResolved)
}

// lastAlert is the last alert message on subject in EVENTS.
func lastAlert(t *testing.T, s jetstream.Stream, subject string) streams.Alert {
	t.Helper()
	m, err := s.GetLastMsgForSubject(context.Background(), subject)
	check.NoError(t, err)
	var a streams.Alert
	check.NoError(t, json.Unmarshal(m.Data, &a))
	return a
}

// TestConfigErrorsNameTheField checks that every bad field is reported at
// once with its path.
func TestConfigErrorsNameTheField(t *testing.T) {
	c := alerts.Config{Webhook: "ftp://x", Rules: []alerts.Rule{
		{Kind: "stale"}, {Kind: "health", Below: 2}, {Kind: "drift"}, {Kind: "nope"},
	}}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{`webhook "ftp://x"`, "rules[0].for", "rules[1].below 2", "rules[2].count 0", "rules[2].within", `rules[3].kind "nope"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}
