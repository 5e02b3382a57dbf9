package agent_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

const rbTenant = "t1"

// guardedApp is a blueprint with spec.rollback that writes version to
// /etc/app.conf; extra is appended under spec (health, telemetry,
// containers).
func guardedApp(name, version, extra string) []byte {
	return []byte(`apiVersion: alpha/v1
kind: Blueprint
metadata: {name: ` + name + `}
spec:
  rollback: {minHealth: 0.9, for: 1s, deadline: 5s}
  files:
    - path: /etc/app.conf
      content: "version=` + version + `\n"
` + extra)
}

// neverReported makes the solution depend on a sensor no collector reads:
// its health is 0 ("no reading") for as long as the revision runs.
const neverReported = `  telemetry:
    sensors: [{name: probe.never, max: 1}]
  health:
    dependsOn: ["sensor:probe.never"]
`

// rbSite is one production site (operator mode, TLS uplink, signed
// blueprints) with node n1's agent.
type rbSite struct {
	p      *prodtest.Hub
	bundle string
	leaf   string // the leaf's client URL
	stop   func() // stops the leaf
	root   string
	state  string
	tune   func(*agent.Config)
	a      *agent.Agent
	stopA  func()             // stops the agent
	status jetstream.KeyValue // the hub's status bucket
}

func newRBSite(t *testing.T, tune func(*agent.Config)) *rbSite {
	t.Helper()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{rbTenant}})
	s := &rbSite{p: p, bundle: p.AddSite("s1", rbTenant, nil, "n1"), root: t.TempDir(), state: t.TempDir(), tune: tune}
	l, stop := p.StartLeaf(s.bundle, prodtest.LeafOptions{})
	s.leaf, s.stop = l.ClientURL(), stop
	s.startAgent()
	_, js := p.Admin(rbTenant)
	var err error
	s.status, err = js.KeyValue(context.Background(), streams.StatusBucket)
	check.NoError(t, err)
	return s
}

func (s *rbSite) startAgent() {
	s.a, s.stopA = s.p.StartAgent(s.bundle, "n1", s.leaf, prodtest.AgentOptions{Root: s.root, State: s.state, Tune: s.tune})
}

func (s *rbSite) put(bp []byte) uint64 { return s.p.PutSigned(rbTenant, "s1.n1", bp) }

// good waits until rev is the node's last-known-good revision and runs.
func (s *rbSite) good(t *testing.T, rev uint64, version string) {
	t.Helper()
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		st := s.a.Status()
		if st.GoodRevision != rev || st.AppliedRevision != rev || st.Phase != engine.PhaseConverged {
			return fmt.Errorf("phase %s applied %d good %d, want good %d: %s", st.Phase, st.AppliedRevision, st.GoodRevision, rev, st.Message)
		}
		return stack.FileIs(filepath.Join(s.root, "etc/app.conf"), "version="+version+"\n")
	})
}

// rolledBack checks a node's status says bad was rolled back to good,
// for a reason that contains why.
func rolledBack(st streams.NodeStatus, bad, good uint64, why string) error {
	if st.Phase != engine.PhaseRolledBack || st.RolledBack == nil {
		return fmt.Errorf("phase %s (%s), rolledBack %+v", st.Phase, st.Message, st.RolledBack)
	}
	rb := st.RolledBack
	if rb.Revision != bad || rb.To != good || st.DesiredRevision != bad || st.AppliedRevision != good || st.GoodRevision != good {
		return fmt.Errorf("rolledBack %+v desired %d applied %d good %d, want %d to %d", rb, st.DesiredRevision, st.AppliedRevision, st.GoodRevision, bad, good)
	}
	if !strings.Contains(rb.Reason, why) {
		return fmt.Errorf("reason %q, want it to name %q", rb.Reason, why)
	}
	return nil
}

// waitRolledBack waits until the agent itself reports the rollback and the
// good revision's file is back.
func (s *rbSite) waitRolledBack(t *testing.T, bad, good uint64, version, why string) {
	t.Helper()
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		if err := rolledBack(s.a.Status(), bad, good, why); err != nil {
			return err
		}
		return stack.FileIs(filepath.Join(s.root, "etc/app.conf"), "version="+version+"\n")
	})
}

// waitHubSees waits until the hub's status bucket carries the rollback.
func (s *rbSite) waitHubSees(t *testing.T, bad, good uint64, why string) {
	t.Helper()
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(s.status, "s1", "n1")
		if err != nil {
			return err
		}
		return rolledBack(ns, bad, good, why)
	})
}

// A revision whose health dependency never reports is rolled back on the
// node's own judgement; the hub sees RolledBack, the good revision's file
// is back, the bad revision is not tried again after an agent restart,
// and a newer revision is taken.
func TestRollbackToLastKnownGood(t *testing.T) {
	s := newRBSite(t, nil)
	g := s.put(guardedApp("app", "1", ""))
	s.good(t, g, "1")

	bad := s.put(guardedApp("app", "2", neverReported))
	stack.WaitFile(t, 10*time.Second, filepath.Join(s.root, "etc/app.conf"), "version=2\n") // it did run
	s.waitRolledBack(t, bad, g, "1", "health 0.00 < 0.90")
	s.waitHubSees(t, bad, g, "sensor:probe.never no reading")
	if f := s.a.Status().Facts; f == nil || f.CPUs == 0 || f.Kernel == "" {
		t.Fatalf("facts %+v", f)
	}

	// A restarted agent gets the bad revision from the bucket again and
	// leaves it alone: tried again, its file would be back at once and
	// stay for the deadline.
	s.stopA()
	s.startAgent()
	s.waitRolledBack(t, bad, g, "1", "sensor:probe.never")
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if err := stack.FileIs(filepath.Join(s.root, "etc/app.conf"), "version=1\n"); err != nil {
			t.Fatalf("the refused revision ran again after a restart: %v", err)
		}
	}
	s.waitRolledBack(t, bad, g, "1", "sensor:probe.never")

	fixed := s.put(guardedApp("app", "3", ""))
	s.good(t, fixed, "3")
	if st := s.a.Status(); st.RolledBack != nil || st.DesiredRevision != fixed {
		t.Fatalf("a newer revision keeps the refusal: %+v", st.RolledBack)
	}
}

// A node whose site leaf stops right after a bad revision arrived rolls
// back while offline; the hub sees it once the leaf is back.
func TestRollbackWhileSiteOffline(t *testing.T) {
	s := newRBSite(t, nil)
	store := t.TempDir()
	s.stop()
	l, stop := s.p.StartLeaf(s.bundle, prodtest.LeafOptions{Store: store, Listen: hostPort(t, s.leaf)})
	s.leaf, s.stop = l.ClientURL(), stop

	g := s.put(guardedApp("app", "1", ""))
	s.good(t, g, "1")
	bad := s.put(guardedApp("app", "2", neverReported))
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if st := s.a.Status(); st.AppliedRevision != bad {
			return fmt.Errorf("applied %d, want the bad %d on trial", st.AppliedRevision, bad)
		}
		return nil
	})
	s.stop()

	s.waitRolledBack(t, bad, g, "1", "sensor:probe.never")
	_, s.stop = s.p.StartLeaf(s.bundle, prodtest.LeafOptions{Store: store, Listen: hostPort(t, s.leaf)})
	s.waitHubSees(t, bad, g, "sensor:probe.never")
}

func hostPort(t *testing.T, clientURL string) string {
	t.Helper()
	u, err := url.Parse(clientURL)
	check.NoError(t, err)
	return u.Host
}

// A bad revision whose container exits at once, with real podman: the
// node rolls back and the good revision's container runs again.
func TestRollbackContainerExits(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Busybox(t, "localhost/busybox:rb")
	s := newRBSite(t, func(c *agent.Config) { c.PodmanURI = pm.URI })
	web := func(command string) string {
		return "  containers:\n    - name: web\n      image: localhost/busybox:rb\n      command: [/bin/sh, -c, \"" + command + "\"]\n"
	}
	g := s.put(guardedApp("app", "1", web("exec sleep 100000")))
	s.good(t, g, "1")
	bad := s.put(guardedApp("app", "2", web("exit 3")))
	s.waitRolledBack(t, bad, g, "1", "container:web")
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		out, err := pm.TryPodman("inspect", "--format", "{{.State.Status}} {{.Path}} {{join .Args \" \"}}", "web")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "running ") || !strings.HasSuffix(out, "/bin/sh -c exec sleep 100000") {
			return errors.New("web: " + out)
		}
		return nil
	})
	t.Logf("reason: %s", s.a.Status().RolledBack.Reason)
}
