package events

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/sysctl"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// TestDriftByHandBecomesAnEvent wires the real engine, the real sysctl
// driver inside a namespace and the publisher: a value changed by hand is
// repaired and recorded with what was found, what was wanted, and when.
func TestDriftByHandBecomesAnEvent(t *testing.T) {
	_, run := netnstest.New(t)
	s := startLeaf(t, -1, t.TempDir())
	t.Cleanup(s.Shutdown)
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.s1.>"}})
	check.NoError(t, err)

	d, err := sysctl.New(driver.Env{Root: t.TempDir(), StateDir: t.TempDir()}, run)
	check.NoError(t, err)
	pub := New(js, "s1", "n1", nil, 0)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(t.TempDir(), "e"),
		Resync: time.Hour, OnRepair: pub.OnRepair})
	check.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pub.Run(ctx) }()
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte("apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: e}\nspec:\n  sysctl: {net.ipv4.ip_forward: \"1\"}\n")})
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if v, _ := d.Read(ctx, "net.ipv4.ip_forward"); v != "1" {
			return fmt.Errorf("not applied")
		}
		return nil
	})
	before := time.Now().UTC()
	_, err = run.Run(ctx, nil, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	check.NoError(t, err)
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		info, err := st.Info(ctx)
		if err != nil || info.State.Msgs == 0 {
			return fmt.Errorf("no event yet (%v)", err)
		}
		return nil
	})
	m, err := st.GetMsg(ctx, 1)
	check.NoError(t, err)
	var ev Event
	check.NoError(t, json.Unmarshal(m.Data, &ev))
	check.Equal(t, m.Subject, "events.s1.n1.drift")
	check.Equal(t, ev.Resource, "sysctl:net.ipv4.ip_forward")
	check.Equal(t, ev.Found, "0")
	check.Equal(t, ev.Want, "1")
	check.Equal(t, ev.Driver, "sysctl")
	if ev.At.Before(before) || ev.Error != "" {
		t.Fatalf("event %+v", ev)
	}
}
