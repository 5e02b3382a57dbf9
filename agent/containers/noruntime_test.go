package containers_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/enginetest"
)

// A node without podman or systemd converges as long as its blueprint asks
// for neither; asking for a container names the missing runtime.
func TestNodeWithoutRuntimes(t *testing.T) {
	state, root := t.TempDir(), t.TempDir()
	fd, err := files.New(driver.Env{Root: root, StateDir: filepath.Join(state, "files")})
	check.NoError(t, err)
	cd := containers.New(containers.Config{URI: "unix://" + filepath.Join(state, "no-podman.sock"),
		Env: driver.Env{Root: root, StateDir: filepath.Join(state, "containers")}})
	ud, err := units.New(units.Config{Env: driver.Env{Root: root, StateDir: filepath.Join(state, "units")},
		Bus: units.DialBus("unix:path=" + filepath.Join(state, "no-bus"))})
	check.NoError(t, err)
	a := enginetest.Start(t, state, fd, cd, ud)
	rev := a.Offer(doc("  files:\n    - {path: /etc/x, content: x}\n"))
	a.WaitConverged(t, rev, 10*time.Second)

	a.Offer(doc("  files:\n    - {path: /etc/x, content: x}\n  containers:\n" + ctr("web", "localhost/busybox:1") +
		"  units:\n    - {name: m.service, content: \"[Service]\\nExecStart=/bin/true\\n\"}\n"))
	a.WaitError(t, 10*time.Second, "containers: podman at unix://", "no-podman.sock")
	a.WaitError(t, 10*time.Second, "units: systemd D-Bus")
}
