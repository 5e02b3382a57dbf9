package redteam

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/kmod"
	"github.com/alpha-edge/alpha/agent/sysctl"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// osPlantDir replaces the directory of the agent's drop-in file (abs, under
// root) with a symlink to a directory outside root that holds a file of the
// same name, and returns that file's path.
func osPlantDir(t *testing.T, root, abs string) string {
	t.Helper()
	outside := t.TempDir()
	victim := filepath.Join(outside, filepath.Base(abs))
	check.NoError(t, os.WriteFile(victim, []byte(osOutside), 0o644))
	dir := filepath.Join(root, filepath.Dir(abs))
	check.NoError(t, os.MkdirAll(filepath.Dir(dir), 0o755))
	check.NoError(t, os.Symlink(outside, dir))
	return victim
}

func osUnchanged(t *testing.T, victim string) {
	t.Helper()
	got, err := os.ReadFile(victim)
	check.NoError(t, err)
	if string(got) != osOutside {
		t.Errorf("file outside the root was written:\n%s", got)
	}
}

// The kmod and sysctl drivers own one drop-in file each under --root; a
// symlinked modprobe.d or sysctl.d planted there must not lead their
// writes outside the root.
func TestDropInsStayInsideRoot(t *testing.T) {
	t.Run("modprobe.d", func(t *testing.T) {
		root := t.TempDir()
		victim := osPlantDir(t, root, kmod.ModprobeFile)
		run, _ := osRecorder(t)
		bp := blueprint.Empty()
		bp.Metadata.Name = "k"
		bp.Spec.KernelModules = []blueprint.KernelModule{{Name: "wireguard", Options: "debug=1"}}
		osApply(t, kmod.New(driver.Env{Root: root}, run), bp)
		osUnchanged(t, victim)
	})
	t.Run("sysctl.d", func(t *testing.T) {
		_, run := netnstest.New(t)
		check.NeedCommand(t, "sysctl", "run .ci/setup-os.sh (apt-get install -y procps)")
		root := t.TempDir()
		victim := osPlantDir(t, root, sysctl.DropIn)
		d, err := sysctl.New(driver.Env{Root: root, StateDir: t.TempDir()}, run)
		check.NoError(t, err)
		bp := blueprint.Empty()
		bp.Metadata.Name = "s"
		bp.Spec.Sysctl = map[string]string{"net.ipv4.ip_forward": "1"}
		osApply(t, d, bp)
		osUnchanged(t, victim)
	})
}
