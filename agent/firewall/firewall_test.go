package firewall

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

func fw(rules ...blueprint.FirewallRule) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "fw"
	b.Spec.Firewall = &blueprint.Firewall{Policy: blueprint.FirewallPolicy{Input: "drop"}, Rules: rules}
	return b
}

var ssh = blueprint.FirewallRule{Name: "ssh", Action: "accept", Protocol: "tcp", Port: 22, Source: "10.0.0.0/8"}
var web = blueprint.FirewallRule{Name: "web", Action: "accept", Protocol: "tcp", Ports: "8000-8100", Interface: "eth0"}

func newDriver(t testing.TB) (*Driver, oscmd.Runner) {
	t.Helper()
	_, run := netnstest.New(t)
	check.NeedCommand(t, "nft", "run .ci/setup-os.sh (apt-get install -y nftables)")
	d, err := New(driver.Env{StateDir: t.TempDir()}, run)
	check.NoError(t, err)
	return d, run
}

func apply(t testing.TB, d *Driver, b *blueprint.Blueprint) (driver.Plan, error) {
	t.Helper()
	p, err := d.Plan(context.Background(), b)
	check.NoError(t, err)
	for _, c := range p {
		if err := c.Apply(context.Background()); err != nil {
			return p, err
		}
	}
	return p, nil
}

func list(t testing.TB, run oscmd.Runner) string {
	t.Helper()
	out, err := run.Run(context.Background(), nil, "nft", "list", "ruleset")
	check.NoError(t, err)
	return string(out)
}

func TestRenderIsOneTransaction(t *testing.T) {
	s := Render(fw(ssh, web).Spec.Firewall)
	for _, want := range []string{
		"table inet alpha\ndelete table inet alpha\ntable inet alpha {",
		"policy drop;",
		`ip saddr 10.0.0.0/8 tcp dport 22 accept comment "alpha:ssh"`,
		`iifname "eth0" tcp dport 8000-8100 accept comment "alpha:web"`,
		`iifname "lo" accept`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
}

func TestApplyChangeReject(t *testing.T) {
	d, run := newDriver(t)
	p, err := apply(t, d, fw(ssh))
	check.NoError(t, err)
	check.Equal(t, len(p), 1)
	check.Equal(t, p[0].Op, driver.Create)
	if got := list(t, run); !strings.Contains(got, `ip saddr 10.0.0.0/8 tcp dport 22 accept comment "alpha:ssh"`) {
		t.Fatalf("rule not loaded:\n%s", got)
	}
	p, err = apply(t, d, fw(ssh))
	check.NoError(t, err)
	check.Equal(t, len(p), 0)

	// A changed blueprint is one change: the whole table replaced at once.
	p, err = apply(t, d, fw(ssh, web))
	check.NoError(t, err)
	check.Equal(t, len(p), 1)
	check.Equal(t, p[0].Op, driver.Update)
	good := list(t, run)
	if !strings.Contains(good, "alpha:web") || !strings.Contains(good, "alpha:ssh") {
		t.Fatalf("update not loaded:\n%s", good)
	}

	// An interface name nft refuses rejects the whole new rule set, even
	// the valid rule beside it; the old table stays in force.
	bad := web
	bad.Interface = "an-interface-name-far-too-long"
	extra := blueprint.FirewallRule{Name: "dns", Action: "accept", Protocol: "udp", Port: 53}
	_, err = apply(t, d, fw(ssh, extra, bad))
	if !errors.Is(err, ErrRejected) || !errors.Is(err, driver.ErrTerminal) {
		t.Fatalf("want a terminal ErrRejected, got %v", err)
	}
	if !strings.Contains(err.Error(), "exceeds maximum length") {
		t.Errorf("error should carry nft's reason: %v", err)
	}
	check.Equal(t, list(t, run), good)

	// Leaving the blueprint removes the table.
	_, err = apply(t, d, blueprint.Empty())
	check.NoError(t, err)
	if got := list(t, run); strings.Contains(got, "table inet alpha") {
		t.Fatalf("table still there:\n%s", got)
	}
}

func TestRuleDeletedByHandIsDrift(t *testing.T) {
	d, run := newDriver(t)
	_, err := apply(t, d, fw(ssh, web))
	check.NoError(t, err)
	out, err := run.Run(context.Background(), nil, "nft", "-a", "list", "chain", "inet", "alpha", "input")
	check.NoError(t, err)
	handle := ""
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "alpha:ssh") {
			handle = l[strings.LastIndex(l, " ")+1:]
		}
	}
	_, err = run.Run(context.Background(), nil, "nft", "delete", "rule", "inet", "alpha", "input", "handle", handle)
	check.NoError(t, err)
	p, err := apply(t, d, fw(ssh, web))
	check.NoError(t, err)
	check.Equal(t, len(p), 1)
	check.Equal(t, p[0].Detail, "rules changed by hand")
	if !strings.Contains(list(t, run), "alpha:ssh") {
		t.Fatal("deleted rule not restored")
	}
}

// engineWith runs the real engine with the firewall driver and returns a
// channel of repairs.
func engineWith(t testing.TB, d driver.Driver, doc []byte) chan engine.Repair {
	t.Helper()
	repairs := make(chan engine.Repair, 100)
	eng, err := engine.New(engine.Config{
		Drivers:  []driver.Driver{d},
		StateDir: filepath.Join(t.TempDir(), "engine"),
		Resync:   time.Hour, // only the watcher can find drift in time
		OnRepair: func(r engine.Repair) { repairs <- r },
	})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: doc})
	return repairs
}

const doc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: fw}
spec:
  firewall:
    policy: {input: drop}
    rules:
      - {name: ssh, action: accept, protocol: tcp, port: 22, source: 10.0.0.0/8}
`

func TestFlushByHandRepairedWithin2s(t *testing.T) {
	d, run := newDriver(t)
	repairs := engineWith(t, d, []byte(doc))
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(list(t, run), "alpha:ssh") {
			return fmt.Errorf("firewall not applied yet")
		}
		return nil
	})
	_, err := run.Run(context.Background(), nil, "nft", "flush", "ruleset")
	check.NoError(t, err)
	check.For(t, 2*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(list(t, run), "alpha:ssh") {
			return fmt.Errorf("flushed firewall not restored")
		}
		return nil
	})
	select {
	case r := <-repairs:
		check.Equal(t, r.Change.ID, "firewall:alpha")
		check.Equal(t, r.Change.Detail, "table deleted or flushed by hand")
	case <-time.After(time.Second):
		t.Fatal("no drift repair reported")
	}
}

// TestUpdateIsNeverSeenHalfDone lists the rule set continuously while the
// table flips between two rule sets: every listing is exactly one of them,
// never a table missing or half-filled.
func TestUpdateIsNeverSeenHalfDone(t *testing.T) {
	d, run := newDriver(t)
	a, b := fw(ssh), fw(ssh, web)
	_, err := apply(t, d, a)
	check.NoError(t, err)
	listA := list(t, run)
	_, err = apply(t, d, b)
	check.NoError(t, err)
	listB := list(t, run)

	stop := make(chan struct{})
	var seen, bad int
	var firstBad string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := run.Run(context.Background(), nil, "nft", "list", "ruleset")
			if err != nil {
				continue
			}
			seen++
			if s := string(out); s != listA && s != listB {
				bad++
				firstBad = s
			}
		}
	}()
	for i := 0; i < 20; i++ {
		_, err := apply(t, d, []*blueprint.Blueprint{a, b}[i%2])
		check.NoError(t, err)
	}
	close(stop)
	<-done
	if seen < 5 {
		t.Fatalf("only %d listings during the updates", seen)
	}
	if bad > 0 {
		t.Fatalf("%d of %d listings were neither rule set, e.g.:\n%s", bad, seen, firstBad)
	}
}

// TestRestartKeepsTable: an agent restarted with its state dir finds its
// table as it left it and plans nothing; a new table name replaces the old.
func TestRestartKeepsTable(t *testing.T) {
	_, run := netnstest.New(t)
	check.NeedCommand(t, "nft", "run .ci/setup-os.sh (apt-get install -y nftables)")
	state := t.TempDir()
	d, err := New(driver.Env{StateDir: state}, run)
	check.NoError(t, err)
	_, err = apply(t, d, fw(ssh))
	check.NoError(t, err)
	d2, err := New(driver.Env{StateDir: state}, run)
	check.NoError(t, err)
	p, err := apply(t, d2, fw(ssh))
	check.NoError(t, err)
	check.Equal(t, len(p), 0)

	renamed := fw(ssh)
	renamed.Spec.Firewall.Table = "alpha_edge"
	p, err = apply(t, d2, renamed)
	check.NoError(t, err)
	check.Equal(t, p.String(), "create firewall:alpha_edge (table missing; replaces table alpha)")
	got := list(t, run)
	if strings.Contains(got, "table inet alpha {") || !strings.Contains(got, "table inet alpha_edge {") {
		t.Fatalf("ruleset after rename:\n%s", got)
	}
}

// An agent from before the alpha prefix was required may have recorded
// another program's table as its own. A new agent forgets it instead of
// deleting it when the firewall section is gone.
func TestRecordedForeignTableIsLeftInPlace(t *testing.T) {
	_, run := netnstest.New(t)
	check.NeedCommand(t, "nft", "run .ci/setup-os.sh (apt-get install -y nftables)")
	_, err := run.Run(context.Background(), []byte("table inet firewalld {\n\tchain c {\n\t\ttcp dport 9090 accept\n\t}\n}\n"), "nft", "-f", "-")
	check.NoError(t, err)
	state := t.TempDir()
	check.NoError(t, os.WriteFile(filepath.Join(state, "firewall.json"), []byte(`{"tables":{"firewalld":{"script":"x","seen":"y"}}}`), 0o600))
	d, err := New(driver.Env{StateDir: state}, run)
	check.NoError(t, err)
	p, err := apply(t, d, blueprint.Empty())
	check.NoError(t, err)
	check.Equal(t, len(p), 0)
	if got := list(t, run); !strings.Contains(got, "tcp dport 9090 accept") {
		t.Fatalf("firewalld's table was touched:\n%s", got)
	}
}
