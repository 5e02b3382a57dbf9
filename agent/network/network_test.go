package network

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// newNS makes a namespace with a veth pair a0/a1 (the kernel here has no
// dummy module; veth is built in).
func newNS(t testing.TB) (*Driver, oscmd.Runner) {
	t.Helper()
	_, run := netnstest.New(t)
	_, err := run.Run(context.Background(), nil, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "a1")
	check.NoError(t, err)
	_, err = run.Run(context.Background(), nil, "ip", "link", "set", "a1", "up")
	check.NoError(t, err)
	return New(driver.Env{}, run), run
}

const doc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: n}
spec:
  network:
    interfaces:
      - {name: a0, up: true, mtu: 1400, addresses: [10.9.0.2/24, "fd00::2/64"]}
    routes:
      - {destination: 10.10.0.0/16, gateway: 10.9.0.1}
      - {destination: 192.0.2.7/32, interface: a0}
`

func show(t testing.TB, run oscmd.Runner, args ...string) string {
	t.Helper()
	out, err := run.Run(context.Background(), nil, "ip", args...)
	check.NoError(t, err)
	return string(out)
}

func converged(t testing.TB, run oscmd.Runner) func() error {
	return func() error {
		link := show(t, run, "addr", "show", "dev", "a0")
		routes := show(t, run, "route", "show")
		for _, want := range []string{"mtu 1400", "10.9.0.2/24", "fd00::2/64", ",UP"} {
			if !strings.Contains(link, want) {
				return fmt.Errorf("link lacks %q:\n%s", want, link)
			}
		}
		for _, want := range []string{"10.10.0.0/16 via 10.9.0.1 dev a0 proto 161", "192.0.2.7 dev a0 proto 161"} {
			if !strings.Contains(routes, want) {
				return fmt.Errorf("routes lack %q:\n%s", want, routes)
			}
		}
		return nil
	}
}

func TestInterfacesAppliedChangedByHandRepaired(t *testing.T) {
	d, run := newNS(t)
	repairs := make(chan engine.Repair, 100)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(t.TempDir(), "e"),
		Resync: time.Hour, OnRepair: func(r engine.Repair) { repairs <- r }})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	check.For(t, 5*time.Second, 20*time.Millisecond, converged(t, run))

	// Changed by hand: MTU, an address removed, a stray address, a route gone.
	for _, c := range [][]string{
		{"link", "set", "dev", "a0", "mtu", "1500"},
		{"addr", "del", "10.9.0.2/24", "dev", "a0"},
		{"addr", "add", "10.99.0.1/24", "dev", "a0"},
		{"route", "del", "192.0.2.7"},
	} {
		// Ignore errors: the agent may already be repairing, and removing
		// 10.9.0.2 lets the kernel drop routes through that subnet itself.
		_, _ = run.Run(ctx, nil, "ip", c...)
	}
	check.For(t, 3*time.Second, 20*time.Millisecond, func() error {
		if err := converged(t, run)(); err != nil {
			return err
		}
		if strings.Contains(show(t, run, "addr", "show", "dev", "a0"), "10.99.0.1") {
			return fmt.Errorf("stray address still there")
		}
		return nil
	})
	if len(repairs) == 0 {
		t.Fatal("no repairs reported")
	}
}

func TestMissingLinkIsClear(t *testing.T) {
	d, _ := newNS(t)
	doc := `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: n}
spec:
  network:
    interfaces: [{name: nope0, mtu: 1400}, {name: a0, mtu: 1300}]
`
	bp := mustParse(t, doc)
	p, err := d.Plan(context.Background(), bp)
	check.NoError(t, err)
	check.Equal(t, len(p), 2) // a0 still planned
	err = p[0].Apply(context.Background())
	if !errors.Is(err, ErrNoLink) || !strings.Contains(err.Error(), `spec.network.interfaces[0].name: no such link: "nope0"`) {
		t.Fatalf("want a no-such-link error naming the field, got %v", err)
	}
	check.NoError(t, p[1].Apply(context.Background()))
}

// Routes that leave the blueprint are removed; afterwards a blueprint
// without routes plans without running ip (the driver remembers it owns
// none) until the route monitor reports a change, so a route added by hand
// with the agent's mark is still removed.
func TestRoutesRemovedAndNotReobservedUntilChange(t *testing.T) {
	d, run := newNS(t)
	eng := enginetest.Start(t, t.TempDir(), d).Engine
	ctx := context.Background()
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	check.For(t, 5*time.Second, 20*time.Millisecond, converged(t, run))

	noRoutes := `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: n}
spec:
  network:
    interfaces: [{name: a0, up: true, addresses: [10.9.0.2/24]}]
`
	ours := func() string { return show(t, run, "route", "show", "proto", Proto) }
	eng.Offer(engine.Candidate{Revision: 2, Data: []byte(noRoutes)})
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if r := ours(); r != "" {
			return fmt.Errorf("alpha's routes still there:\n%s", r)
		}
		return nil
	})

	// Plan no longer runs ip for routes: a runner that cannot run anything
	// plans the same blueprint without error once the driver knows.
	bp := mustParse(t, noRoutes)
	bp.Spec.Network.Interfaces = nil
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !d.knownNoRoutes() {
			return errors.New("driver has not settled on 'no routes of ours'")
		}
		return nil
	})
	broken := New(driver.Env{}, oscmd.Runner{Prefix: []string{"/nonexistent/alpha-ip"}})
	broken.noRoutesAt = time.Now()
	_, err := broken.Plan(ctx, bp)
	check.NoError(t, err)
	broken.forgetRoutes()
	if _, err := broken.Plan(ctx, bp); err == nil {
		t.Fatal("with the memory forgotten, Plan must look (and fail with this runner)")
	}

	// A route with the agent's mark added by hand: the monitor wakes the
	// engine and makes the driver look again.
	_, err = run.Run(ctx, nil, "ip", "route", "add", "198.51.100.0/24", "dev", "a0", "proto", Proto)
	check.NoError(t, err)
	check.For(t, 3*time.Second, 20*time.Millisecond, func() error {
		if r := ours(); r != "" {
			return fmt.Errorf("hand-added route with alpha's mark still there:\n%s", r)
		}
		return nil
	})
}
