package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/alerts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/streams"
)

// alpha status ends with the alerts firing in the hub's alerts bucket,
// and says nothing of alerts when none fires.
func TestStatusListsFiringAlerts(t *testing.T) {
	_, nc := hubtest.Start(t)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	now := time.Now()
	var out bytes.Buffer
	printAlerts(ctx, &out, js, now) // no bucket yet
	check.Equal(t, out.String(), "")
	kv, err := js.CreateKeyValue(ctx, alerts.BucketConfig)
	check.NoError(t, err)
	a := streams.Alert{Name: "stale", Kind: "stale", Site: "s2", State: streams.AlertFiring,
		Summary: "site s2 not heard from for 6m0s", StartsAt: now.Add(-time.Minute)}
	b, _ := json.Marshal(a)
	_, err = kv.Put(ctx, alerts.Key(a), b)
	check.NoError(t, err)
	printAlerts(ctx, &out, js, now)
	if !strings.Contains(out.String(), "FIRING ALERTS (1)") || !strings.Contains(out.String(), "stale        s2                       site s2 not heard from for 6m0s (for 1m0s)") {
		t.Fatalf("alpha status printed:\n%s", out.String())
	}
}
