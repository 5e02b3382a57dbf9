// Package alerts evaluates the hub's alerting rules over what the sites send
// up (status, link activity, events) and reports each alert's firing and
// resolution to the EVENTS stream, the alerts bucket and, if configured, an
// Alertmanager-compatible webhook.
package alerts

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/scan"
	"github.com/alpha-edge/alpha/hub/sites"
	"github.com/alpha-edge/alpha/streams"
)

// Tenant is one account whose fleet is watched.
type Tenant struct {
	Name string // empty without operator mode
	JS   jetstream.JetStream
}

// Options are what an Engine needs.
type Options struct {
	Config
	Tenants []Tenant
	Log     *slog.Logger
	Client  *http.Client     // for the webhook; default: 10 s timeout
	Now     func() time.Time // default time.Now
	// Active says this hub evaluates now (nil: always). In a hub cluster
	// only the JetStream meta leader does, so one member fires each alert.
	Active func() bool
	// Replicas of the alerts bucket (a cluster's 3).
	Replicas int
}

// Engine evaluates the rules every interval until stopped.
type Engine struct {
	o      Options
	cancel context.CancelFunc
	done   chan struct{}

	tenants []*tenantState
	pending []streams.Alert // webhook deliveries not acknowledged yet
	resent  time.Time
	active  bool // evaluated at the last tick
}

type tenantState struct {
	Tenant
	kv          jetstream.KeyValue
	firing      map[string]streams.Alert // key -> alert, as in the bucket
	healthBelow map[string]time.Time     // rule/node key -> since when below the rule's floor
	neverHeard  map[string]time.Time     // rule/site -> since when registered and never heard from
}

// maxPending bounds the webhook's backlog while it is unreachable: the
// bucket and EVENTS keep the truth, the webhook gets the newest.
const maxPending = 1000

// BucketConfig is the alerts bucket of a tenant at the hub.
var BucketConfig = jetstream.KeyValueConfig{
	Bucket:      streams.AlertsBucket,
	Description: "firing alerts, key <rule>.<site>.<node>.<resource hash>",
	History:     1,
	Storage:     jetstream.FileStorage,
}

// Start evaluates the rules every interval until Stop. Each tenant is
// prepared (alerts bucket, EVENTS capturing alerts.>) at its first
// evaluation and again at the next one if that failed: a hub cluster
// still electing its JetStream leader must not stop the hub.
func Start(ctx context.Context, o Options) (*Engine, error) {
	if err := o.Config.Validate(); err != nil {
		return nil, err
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Client == nil {
		o.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Engine{o: o, done: make(chan struct{})}
	for _, t := range o.Tenants {
		e.tenants = append(e.tenants, &tenantState{Tenant: t})
	}
	ctx, e.cancel = context.WithCancel(ctx)
	go e.run(ctx)
	return e, nil
}

// Stop ends the evaluations and waits for the one under way.
func (e *Engine) Stop() {
	e.cancel()
	<-e.done
}

// prepare makes the tenant's alerts bucket, makes sure EVENTS captures
// alerts.>, and loads the alerts firing; idempotent.
func (ts *tenantState) prepare(ctx context.Context, replicas int) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	bc := BucketConfig
	bc.Replicas = max(replicas, 1)
	kv, err := ts.JS.CreateOrUpdateKeyValue(ctx, bc)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", streams.AlertsBucket, err)
	}
	// The hub's EVENTS sources from the sites; the hub's own alerts are
	// published under alerts.>, which no site credential may send. A hub
	// bootstrapped before alerts existed lacks that subject: add it.
	s, err := ts.JS.Stream(ctx, streams.EventsStream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", streams.EventsStream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	if want := streams.AlertsRoot + ".>"; !slices.Contains(info.Config.Subjects, want) {
		cfg := info.Config
		cfg.Subjects = append(cfg.Subjects, want)
		if _, err := ts.JS.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("stream %s: adding subject %s: %w", streams.EventsStream, want, err)
		}
	}
	firing, err := Firing(ctx, ts.JS)
	if err != nil {
		return err
	}
	ts.kv, ts.firing = kv, firing
	ts.healthBelow, ts.neverHeard = map[string]time.Time{}, map[string]time.Time{}
	return nil
}

// Firing reads the alerts firing now in a tenant's bucket, by key; none if
// the hub has no bucket yet.
func Firing(ctx context.Context, js jetstream.JetStream) (map[string]streams.Alert, error) {
	out := map[string]streams.Alert{}
	kv, err := js.KeyValue(ctx, streams.AlertsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return out, err
	}
	for k := range keys.Keys() {
		en, err := kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var a streams.Alert
		if json.Unmarshal(en.Value(), &a) == nil {
			out[k] = a
		}
	}
	return out, nil
}

func (e *Engine) run(ctx context.Context) {
	defer close(e.done)
	t := time.NewTicker(e.o.interval())
	defer t.Stop()
	for {
		e.tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tick evaluates every tenant once and delivers what changed.
func (e *Engine) tick(ctx context.Context) {
	if e.o.Active != nil && !e.o.Active() {
		e.active = false
		return
	}
	if !e.active {
		// Another member may have fired and resolved alerts while this
		// one was not evaluating: start from the bucket.
		for _, ts := range e.tenants {
			ts.kv = nil
		}
	}
	e.active = true
	now := e.o.Now()
	var changed []streams.Alert
	for _, ts := range e.tenants {
		if ts.kv == nil {
			if err := ts.prepare(ctx, e.o.Replicas); err != nil {
				e.o.Log.Warn("alerts: preparing tenant; retrying next evaluation", "tenant", ts.Name, "err", err)
				continue
			}
		}
		want, err := e.evaluate(ctx, ts, now)
		if err != nil {
			// A partial view would resolve alerts that still hold.
			e.o.Log.Warn("alerts: evaluation failed; keeping the alerts as they are", "tenant", ts.Name, "err", err)
			continue
		}
		changed = append(changed, e.apply(ctx, ts, want, now)...)
	}
	e.pending = append(e.pending, changed...)
	if e.o.Webhook == "" {
		e.pending = nil
		return
	}
	if now.Sub(e.resent) >= e.o.resend() {
		e.resent = now
		for _, ts := range e.tenants {
			for _, a := range ts.firing {
				if !slices.ContainsFunc(e.pending, func(p streams.Alert) bool { return p.Name == a.Name && sameSubject(p, a) }) {
					e.pending = append(e.pending, a)
				}
			}
		}
	}
	if len(e.pending) > maxPending {
		e.pending = e.pending[len(e.pending)-maxPending:]
	}
	if len(e.pending) == 0 {
		return
	}
	if err := e.post(ctx, e.pending); err != nil {
		e.o.Log.Warn("alerts: webhook delivery failed; retrying next evaluation", "webhook", e.o.Webhook, "alerts", len(e.pending), "err", err)
		return
	}
	e.pending = nil
}

func sameSubject(a, b streams.Alert) bool {
	return a.Tenant == b.Tenant && a.Site == b.Site && a.Node == b.Node && a.Resource == b.Resource
}

// apply turns the wanted set into firings and resolutions: the bucket, an
// EVENTS message each, and the list for the webhook.
func (e *Engine) apply(ctx context.Context, ts *tenantState, want map[string]streams.Alert, now time.Time) []streams.Alert {
	var changed []streams.Alert
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		a := want[k]
		a.Tenant, a.State = ts.Name, streams.AlertFiring
		if old, ok := ts.firing[k]; ok {
			if old.Summary == a.Summary {
				continue
			}
			a.StartsAt = old.StartsAt // same alert, newer words: no new firing
			if e.store(ctx, ts, k, a) == nil {
				ts.firing[k] = a
			}
			continue
		}
		a.StartsAt = now
		if err := e.store(ctx, ts, k, a); err != nil {
			continue
		}
		ts.firing[k] = a
		e.publish(ctx, ts, k, a)
		e.o.Log.Info("alert firing", "tenant", ts.Name, "alert", a.Name, "site", a.Site, "node", a.Node, "summary", a.Summary)
		changed = append(changed, a)
	}
	for k, a := range ts.firing {
		if _, ok := want[k]; ok {
			continue
		}
		if err := ts.kv.Delete(ctx, k); err != nil {
			e.o.Log.Warn("alerts: resolving", "key", k, "err", err)
			continue
		}
		delete(ts.firing, k)
		a.State, a.EndsAt = streams.AlertResolved, now
		e.publish(ctx, ts, k, a)
		e.o.Log.Info("alert resolved", "tenant", ts.Name, "alert", a.Name, "site", a.Site, "node", a.Node)
		changed = append(changed, a)
	}
	return changed
}

func (e *Engine) store(ctx context.Context, ts *tenantState, key string, a streams.Alert) error {
	b, _ := json.Marshal(a)
	_, err := ts.kv.Put(ctx, key, b)
	if err != nil {
		e.o.Log.Warn("alerts: storing", "key", key, "err", err)
	}
	return err
}

func (e *Engine) publish(ctx context.Context, ts *tenantState, key string, a streams.Alert) {
	b, _ := json.Marshal(a)
	id := fmt.Sprintf("%s.%s.%d", key, a.State, a.StartsAt.UnixNano())
	if _, err := ts.JS.Publish(ctx, streams.AlertSubject(a), b, jetstream.WithMsgID(id)); err != nil {
		e.o.Log.Warn("alerts: publishing to EVENTS", "subject", streams.AlertSubject(a), "err", err)
	}
}

// Key is an alert's key in the bucket: the resource is hashed, since a
// resource id (file:/etc/x) holds characters a key may not.
func Key(a streams.Alert) string {
	res := "_"
	if a.Resource != "" {
		h := sha256.Sum256([]byte(a.Resource))
		res = hex.EncodeToString(h[:6])
	}
	return a.Name + "." + streams.Token(a.Site) + "." + streams.Token(a.Node) + "." + res
}

// evaluate is the set of alerts that hold now, by key.
func (e *Engine) evaluate(ctx context.Context, ts *tenantState, now time.Time) (map[string]streams.Alert, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	want := map[string]streams.Alert{}
	add := func(a streams.Alert) { want[Key(a)] = a }
	nodes, err := inventory.Statuses(ctx, ts.JS)
	if err != nil {
		return nil, err
	}
	for _, r := range e.o.Rules {
		switch r.Kind {
		case KindStale:
			links, err := sites.Links(ctx, ts.JS)
			if err != nil {
				return nil, fmt.Errorf("site links: %w", err)
			}
			for site, active := range links {
				k := r.Name + "/" + site
				if active >= 0 {
					delete(ts.neverHeard, k)
				}
				switch {
				case active < 0:
					// Registered, never heard from: stale once that has
					// lasted the rule's time since this hub first saw it.
					since, ok := ts.neverHeard[k]
					if !ok {
						since = now
						ts.neverHeard[k] = now
					}
					if now.Sub(since) > time.Duration(r.For) {
						add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: site,
							Summary: fmt.Sprintf("site %s never heard from since %s", site, since.UTC().Format(time.RFC3339))})
					}
				case active > time.Duration(r.For):
					// The summary names the rule's time, not the silence so
					// far: a growing number would rewrite the alert (and
					// wake every open page) at each evaluation.
					add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: site,
						Summary: fmt.Sprintf("site %s not heard from for over %s", site, time.Duration(r.For))})
				}
			}
		case KindHealth:
			seen := map[string]bool{}
			for _, n := range nodes {
				k := r.Name + "/" + streams.Key(n.Site, n.Node)
				if n.Health == nil || *n.Health >= r.Below {
					continue
				}
				seen[k] = true
				since, ok := ts.healthBelow[k]
				if !ok {
					since = now
					ts.healthBelow[k] = now
				}
				if now.Sub(since) >= time.Duration(r.For) {
					add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: n.Site, Node: n.Node,
						Summary: fmt.Sprintf("solution health %.2f below %.2f since %s", *n.Health, r.Below, since.UTC().Format(time.RFC3339))})
				}
			}
			for k := range ts.healthBelow {
				if strings.HasPrefix(k, r.Name+"/") && !seen[k] {
					delete(ts.healthBelow, k)
				}
			}
		case KindPermission:
			for _, n := range nodes {
				var denied []string
				for _, msg := range n.Errors {
					if strings.HasPrefix(msg, "permission denied") {
						denied = append(denied, msg)
					}
				}
				if len(denied) > 0 {
					add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: n.Site, Node: n.Node, Summary: strings.Join(denied, "; ")})
				}
			}
		case KindDrift:
			type res struct{ site, node, resource string }
			count := map[res]int{}
			err := scan.Since(ctx, ts.JS, streams.EventsStream, []string{streams.EventsRoot + ".*.*.drift"}, now.Add(-time.Duration(r.Within)), 0, func(m jetstream.Msg) {
				var ev struct{ Site, Node, Resource string }
				if json.Unmarshal(m.Data(), &ev) == nil && ev.Resource != "" && siteOfSubject(m.Subject()) == ev.Site {
					count[res{ev.Site, ev.Node, ev.Resource}]++
				}
			})
			if err != nil {
				return nil, fmt.Errorf("drift events: %w", err)
			}
			for k, c := range count {
				if c >= r.Count {
					add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: k.site, Node: k.node, Resource: k.resource,
						Summary: fmt.Sprintf("%s repaired %d times in %s", k.resource, c, time.Duration(r.Within))})
				}
			}
		case KindEscalated:
			// What agent/remediation emits as Metric{Layer: remediation, Name: remediation.escalated}.
			filter := streams.EventsRoot + ".*.*.remediation.remediation.escalated"
			err := scan.Since(ctx, ts.JS, streams.EventsStream, []string{filter}, now.Add(-time.Duration(r.For)), 0, func(m jetstream.Msg) {
				var mt streams.Metric
				if json.Unmarshal(m.Data(), &mt) != nil || siteOfSubject(m.Subject()) != mt.Site {
					return
				}
				add(streams.Alert{Name: r.Name, Kind: r.Kind, Site: mt.Site, Node: mt.Node, Resource: mt.Labels["policy"],
					Summary: "remediation " + mt.Labels["policy"] + " escalated: " + mt.Text})
			})
			if err != nil {
				return nil, fmt.Errorf("remediation events: %w", err)
			}
		}
	}
	return want, nil
}

// siteOfSubject is the site token of an events subject: an event counts
// only for the site whose subject it came under, so a document naming
// another site cannot raise that site's alerts.
func siteOfSubject(subj string) string {
	parts := strings.SplitN(subj, ".", 3)
	if len(parts) < 2 {
		return ""
	}
	return parts[1]
}

// post sends alerts in the body Alertmanager's POST /api/v2/alerts takes:
// a list of {labels, annotations, startsAt, endsAt}; a resolved alert is
// one whose endsAt has passed.
func (e *Engine) post(ctx context.Context, list []streams.Alert) error {
	type amAlert struct {
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt,omitzero"`
		GeneratorURL string            `json:"generatorURL,omitempty"`
	}
	body := make([]amAlert, 0, len(list))
	for _, a := range list {
		l := map[string]string{"alertname": a.Name, "kind": a.Kind, "site": a.Site}
		for k, v := range map[string]string{"tenant": a.Tenant, "node": a.Node, "resource": a.Resource} {
			if v != "" {
				l[k] = v
			}
		}
		body = append(body, amAlert{Labels: l, Annotations: map[string]string{"summary": a.Summary, "state": a.State},
			StartsAt: a.StartsAt, EndsAt: a.EndsAt})
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.o.Webhook, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.o.Client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}
