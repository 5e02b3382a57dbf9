package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// Health reaches the node's status when a sample changes it, not at the
// next reconcile pass or heartbeat: a sensor leaves its range and the hub's
// status says so within a few sample intervals.
func TestHealthChangeReachesStatus(t *testing.T) {
	sys := t.TempDir()
	hw := filepath.Join(sys, "class/hwmon/hwmon0")
	check.NoError(t, os.MkdirAll(hw, 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(hw, "name"), []byte("cpu\n"), 0o644))
	temp := func(c int) {
		check.NoError(t, os.WriteFile(filepath.Join(hw, "temp1_input"), []byte(fmt.Sprintf("%d\n", c*1000)), 0o644))
	}
	temp(60)
	t.Setenv("HOST_SYS", sys)

	h := stack.Hub(t)
	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	stack.Agent(t, "s1", "n1", l.ClientURL(), t.TempDir(), t.TempDir())
	hubStatus := stack.KV(t, h.ClientURL(), "hub", streams.StatusBucket)
	_, err := stack.NATS(t, h.ClientURL(), "kv", "put", "blueprints", "s1.n1", `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: hot}
spec:
  telemetry:
    collectors: [{name: sensors, interval: 200ms}]
    sensors: [{name: temperature.cpu, max: 85}]
  health:
    dependsOn: ["sensor:temperature.cpu"]
`)
	check.NoError(t, err)
	health := func(want float64, within time.Duration) {
		t.Helper()
		check.For(t, within, 20*time.Millisecond, func() error {
			ns, err := stack.NodeStatus(hubStatus, "s1", "n1")
			if err != nil {
				return err
			}
			if ns.Health == nil || *ns.Health != want {
				return fmt.Errorf("hub status health %v, want %v", ns.Health, want)
			}
			return nil
		})
	}
	// The first from a cold start (leaf, mirror, first apply, first
	// samples); the changes after it well inside the 10 s status heartbeat
	// and the 30 s resync: the health follows the sensor, not a timer.
	health(1, 30*time.Second)
	temp(90)
	health(0, 4*time.Second)
	temp(70)
	health(1, 4*time.Second)
}
