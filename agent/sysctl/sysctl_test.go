package sysctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

func newDriver(t testing.TB) (*Driver, oscmd.Runner, string) {
	t.Helper()
	_, run := netnstest.New(t)
	check.NeedCommand(t, "sysctl", "run .ci/setup-os.sh (apt-get install -y procps)")
	root := t.TempDir()
	d, err := New(driver.Env{Root: root, StateDir: t.TempDir()}, run)
	check.NoError(t, err)
	return d, run, root
}

func bp(kv map[string]string) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "s"
	b.Spec.Sysctl = kv
	return b
}

func apply(t testing.TB, d *Driver, b *blueprint.Blueprint) (driver.Plan, error) {
	t.Helper()
	p, err := d.Plan(context.Background(), b)
	for _, c := range p {
		check.NoError(t, c.Apply(context.Background()))
	}
	return p, err
}

func read(t testing.TB, d *Driver, key string) string {
	t.Helper()
	v, err := d.Read(context.Background(), key)
	check.NoError(t, err)
	return v
}

func TestApplyPersistRestore(t *testing.T) {
	d, _, root := newDriver(t)
	before := read(t, d, "net.ipv4.ip_local_port_range")
	want := map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.ip_local_port_range": "20000  30000"}
	_, err := apply(t, d, bp(want))
	check.NoError(t, err)
	check.Equal(t, read(t, d, "net.ipv4.ip_forward"), "1")
	check.Equal(t, read(t, d, "net.ipv4.ip_local_port_range"), "20000 30000")
	got, err := os.ReadFile(filepath.Join(root, DropIn))
	check.NoError(t, err)
	if !strings.Contains(string(got), "net.ipv4.ip_forward = 1\nnet.ipv4.ip_local_port_range = 20000 30000\n") {
		t.Fatalf("drop-in:\n%s", got)
	}
	p, err := apply(t, d, bp(want))
	check.NoError(t, err)
	check.Equal(t, len(p), 0)

	// Leaving the blueprint puts back what the node had and removes the drop-in.
	_, err = apply(t, d, bp(nil))
	check.NoError(t, err)
	check.Equal(t, read(t, d, "net.ipv4.ip_forward"), "0")
	check.Equal(t, read(t, d, "net.ipv4.ip_local_port_range"), before)
	if _, err := os.Stat(filepath.Join(root, DropIn)); !os.IsNotExist(err) {
		t.Fatalf("drop-in should be gone: %v", err)
	}
}

func TestUnknownKeyIsClearAndOthersApply(t *testing.T) {
	d, _, root := newDriver(t)
	var mu sync.Mutex
	var last engine.Status
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(t.TempDir(), "e"),
		Resync: time.Hour, OnStatus: func(s engine.Status) { mu.Lock(); last = s; mu.Unlock() }})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc + "    net.ipv4.no_such_key: \"1\"\n")})
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(last.Errors) != 1 {
			return fmt.Errorf("status errors %v", last.Errors)
		}
		return nil
	})
	mu.Lock()
	msg := last.Errors[0]
	mu.Unlock()
	for _, want := range []string{"spec.sysctl.net.ipv4.no_such_key", "no such sysctl key", "/proc/sys/net/ipv4/no_such_key"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q lacks %q", msg, want)
		}
	}
	check.Equal(t, read(t, d, "net.ipv4.ip_forward"), "1")
	b, err := os.ReadFile(filepath.Join(root, DropIn))
	check.NoError(t, err)
	if strings.Contains(string(b), "no_such_key") {
		t.Fatalf("unknown key persisted:\n%s", b)
	}
	p, err := d.Plan(context.Background(), bp(map[string]string{"net.ipv4.no_such_key": "1"}))
	check.NoError(t, err)
	if err := p[0].Apply(context.Background()); !errors.Is(err, ErrNoSuchKey) || !errors.Is(err, driver.ErrTerminal) {
		t.Fatalf("want a terminal ErrNoSuchKey, got %v", err)
	}
}

const doc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: s}
spec:
  sysctl:
    net.ipv4.ip_forward: "1"
`

func TestChangedByHandIsRepaired(t *testing.T) {
	d, run, _ := newDriver(t)
	repairs := make(chan engine.Repair, 10)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(t.TempDir(), "e"),
		Resync: time.Hour, OnRepair: func(r engine.Repair) { repairs <- r }})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	is := func(v string) func() error {
		return func() error {
			if got := read(t, d, "net.ipv4.ip_forward"); got != v {
				return fmt.Errorf("ip_forward is %s, want %s", got, v)
			}
			return nil
		}
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, is("1"))
	_, err = run.Run(ctx, nil, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
	check.NoError(t, err)
	check.For(t, 3*time.Second, 20*time.Millisecond, is("1"))
	select {
	case r := <-repairs:
		check.Equal(t, r.Change.Found, "0")
		check.Equal(t, r.Change.Want, "1")
	case <-time.After(time.Second):
		t.Fatal("no repair reported")
	}
}
