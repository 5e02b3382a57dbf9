package containers_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/internal/testkit/nspawntest"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
)

// node is one site node: podman, a booted systemd, the hub's artifacts, and
// an agent whose state survives restarts.
type node struct {
	pm    *podmantest.Service
	m     *nspawntest.Machine
	nc    *nats.Conn
	state string
	agent *enginetest.Agent
}

func hexsum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startAgent builds both drivers over the node's state and runs the engine;
// nc nil models a node with its uplink cut.
func (n *node) startAgent(t *testing.T, nc *nats.Conn) *enginetest.Agent {
	var src artifacts.Source
	if nc != nil {
		src = artifacts.NewObjectStore(nc, "", "")
	}
	cache, err := artifacts.NewCache(filepath.Join(n.state, "artifacts"), src, nil)
	check.NoError(t, err)
	cd := containers.New(containers.Config{URI: n.pm.URI, Artifacts: cache,
		Env: driver.Env{Root: t.TempDir(), StateDir: filepath.Join(n.state, "containers")}})
	ud, err := units.New(units.Config{Env: driver.Env{Root: n.m.Root, StateDir: filepath.Join(n.state, "units")},
		Bus: units.DialBus(n.m.BusAddress), Artifacts: cache})
	check.NoError(t, err)
	n.agent = enginetest.Start(t, n.state, cd, ud)
	return n.agent
}

func newNode(t *testing.T) *node {
	n := &node{pm: podmantest.Start(t), m: nspawntest.Boot(t), state: t.TempDir()}
	n.pm.Busybox(t, "localhost/busybox:1")
	n.pm.Busybox(t, "localhost/busybox:2")
	_, n.nc = hubtest.Start(t)
	return n
}

// busyboxArtifact puts the static busybox at the hub: the native executable.
func (n *node) busyboxArtifact(t *testing.T) string {
	bb, err := exec.LookPath("busybox")
	check.NoError(t, err)
	b, err := os.ReadFile(bb)
	check.NoError(t, err)
	hubtest.Put(t, n.nc, "busybox-static", b)
	return hexsum(b)
}

// imageArtifact saves an image as an archive and puts it at the hub.
func (n *node) imageArtifact(t *testing.T, ref, name string) string {
	p := filepath.Join(t.TempDir(), "image.tar")
	n.pm.Podman(t, "save", "-o", p, ref)
	b, err := os.ReadFile(p)
	check.NoError(t, err)
	hubtest.Put(t, n.nc, name, b)
	return hexsum(b)
}

func meterUnit(exeSHA string) string {
	return `  units:
    - name: meter.service
      content: |
        [Service]
        ExecStart=/usr/local/lib/meter/busybox sleep 100000
        [Install]
        WantedBy=multi-user.target
      executable:
        path: /usr/local/lib/meter/busybox
        artifact: {name: busybox-static, sha256: ` + exeSHA + `}
`
}

func archiveCtr(name, image, artifact, sha string) string {
	return ctr(name, image) + fmt.Sprintf("      artifact: {name: %s, sha256: %s}\n", artifact, sha)
}

func (n *node) active(unit string) error {
	out, _ := n.m.Systemctl("is-active", unit)
	if out != "active" {
		return fmt.Errorf("%s is %q", unit, out)
	}
	return nil
}

func TestTwoContainersAndAServiceWithANativeBinary(t *testing.T) {
	n := newNode(t)
	exe := n.busyboxArtifact(t)
	n.pm.Podman(t, "tag", "localhost/busybox:1", "localhost/sensor:1")
	img := n.imageArtifact(t, "localhost/sensor:1", "sensor-image")
	n.pm.Podman(t, "rmi", "localhost/sensor:1") // only the archive at the hub has it now
	a := n.startAgent(t, n.nc)

	cts := "  containers:\n" + ctr("web", "localhost/busybox:1") + archiveCtr("sensor", "localhost/sensor:1", "sensor-image", img)
	rev := a.Offer(doc(cts + meterUnit(exe)))
	a.WaitConverged(t, rev, 60*time.Second)
	idWeb := waitRunning(t, n.pm, "web", time.Second)
	idSensor := waitRunning(t, n.pm, "sensor", time.Second)
	check.For(t, time.Second, 20*time.Millisecond, func() error { return n.active("meter.service") })
	for _, id := range []string{"container:web", "container:sensor", "unit:meter.service"} {
		if r, _ := a.Resource(id); r.State != "running" {
			t.Fatalf("%s reported %+v", id, r)
		}
	}

	// A new image for web: web alone is replaced.
	cts2 := "  containers:\n" + ctr("web", "localhost/busybox:2") + archiveCtr("sensor", "localhost/sensor:1", "sensor-image", img)
	rev = a.Offer(doc(cts2 + meterUnit(exe)))
	a.WaitConverged(t, rev, 60*time.Second)
	if id := waitRunning(t, n.pm, "web", time.Second); id == idWeb {
		t.Fatal("web was not replaced")
	}
	check.Equal(t, waitRunning(t, n.pm, "sensor", time.Second), idSensor)
	check.NoError(t, n.active("meter.service"))

	// The service leaves: stopped, disabled, its files gone; containers stay.
	rev = a.Offer(doc(cts2))
	a.WaitConverged(t, rev, 60*time.Second)
	if err := n.active("meter.service"); err == nil {
		t.Fatal("meter.service still active")
	}
	for _, p := range []string{"usr/local/lib/meter/busybox", "etc/systemd/system/meter.service",
		"etc/systemd/system/multi-user.target.wants/meter.service"} {
		if _, err := os.Lstat(filepath.Join(n.m.Root, p)); !os.IsNotExist(err) {
			t.Errorf("%s is still there", p)
		}
	}
	check.Equal(t, waitRunning(t, n.pm, "sensor", time.Second), idSensor)
}

func TestOfflineRestartComesBackFromCache(t *testing.T) {
	n := newNode(t)
	hub, nc := hubtest.Start(t) // a hub of its own, to cut
	n.nc = nc
	exe := n.busyboxArtifact(t)
	img := n.imageArtifact(t, "localhost/busybox:2", "sensor-image")
	a := n.startAgent(t, nc)
	base := "  containers:\n" + archiveCtr("sensor", "localhost/busybox:2", "sensor-image", img)
	rev := a.Offer(doc(base + meterUnit(exe)))
	a.WaitConverged(t, rev, 60*time.Second)

	// An artifact whose content does not match its sha256 is refused, with a
	// status that says so; the rest keeps running.
	bad := strings.Repeat("0", 64)
	a.Offer(doc(base + archiveCtr("tampered", "localhost/busybox:2", "sensor-image", bad) + meterUnit(exe)))
	msg := a.WaitError(t, 30*time.Second, "container:tampered", "sha256 "+img, "wants "+bad)
	if !strings.Contains(msg, "terminal") {
		t.Errorf("a checksum mismatch should be terminal: %s", msg)
	}
	if r, _ := a.Resource("container:tampered"); r.State != "failed" || !strings.Contains(r.Message, "sha256") {
		t.Fatalf("container:tampered reported %+v", r)
	}
	waitRunning(t, n.pm, "sensor", time.Second)

	// Cut the uplink, stop the agent and lose everything a reboot loses.
	a.Stop()
	nc.Close()
	hub.Shutdown()
	n.pm.Podman(t, "rm", "-f", "-t", "0", "sensor")
	n.pm.Podman(t, "rmi", "localhost/busybox:2")
	if out, err := n.m.Systemctl("stop", "meter.service"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	check.NoError(t, os.Remove(filepath.Join(n.m.Root, "usr/local/lib/meter/busybox")))

	a = n.startAgent(t, nil) // nothing offered: it runs what it persisted
	waitRunning(t, n.pm, "sensor", 30*time.Second)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error { return n.active("meter.service") })
	a.WaitError(t, 10*time.Second, "container:tampered", "not cached")
}
