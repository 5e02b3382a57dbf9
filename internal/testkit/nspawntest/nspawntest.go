// Package nspawntest boots a real systemd in a container with systemd-nspawn
// for a test: its own copy of a cached Debian root file system, its own
// network namespace (loopback only), its D-Bus system bus reachable from the
// host through a socket in a temp dir.
package nspawntest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// DefaultRootFS is where .ci/setup-systemd.sh caches the root file system.
const DefaultRootFS = "/var/cache/alpha/nspawn-bookworm.tar"

// Machine is a booted systemd container.
type Machine struct {
	Name       string
	Root       string // /proc/<pid 1>/root: the container's file system seen from the host
	BusAddress string // unix:path=... of its system bus
	PID        int    // the container's PID 1, in the host's PID namespace
	nspawn     *exec.Cmd
}

// Boot starts a machine and shuts it down when the test ends. It skips the
// test, or fails it under CI, without root, systemd-nspawn or the cached root
// file system (ALPHA_NSPAWN_ROOTFS, default DefaultRootFS).
func Boot(t testing.TB) *Machine {
	t.Helper()
	check.NeedRoot(t)
	nspawn := check.NeedCommand(t, "systemd-nspawn", "run .ci/setup-systemd.sh as root")
	check.NeedCommand(t, "nsenter", "install util-linux")
	tarball := os.Getenv("ALPHA_NSPAWN_ROOTFS")
	if tarball == "" {
		tarball = DefaultRootFS
	}
	_, err := os.Stat(tarball)
	check.Need(t, err == nil, "the nspawn root file system "+tarball, "run .ci/setup-systemd.sh as root (or set ALPHA_NSPAWN_ROOTFS)")

	rootfs, err := os.MkdirTemp("/var/tmp", "alpha-nspawn-")
	check.NoError(t, err)
	busDir, err := os.MkdirTemp("", "alpha-bus-")
	check.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(rootfs); os.RemoveAll(busDir) })
	if out, err := exec.Command("tar", "-C", rootfs, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("extracting %s: %v: %s", tarball, err, out)
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	m := &Machine{Name: "alpha-" + hex.EncodeToString(rnd[:]),
		BusAddress: "unix:path=" + filepath.Join(busDir, "system_bus_socket")}
	cmd := exec.Command(nspawn, "-b", "-D", rootfs, "--register=no", "--keep-unit", "--console=passive",
		"--private-network", "--machine="+m.Name, "--bind="+busDir+":/run/dbus")
	logf, err := os.Create(filepath.Join(busDir, "nspawn.log"))
	check.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	check.NoError(t, cmd.Start())
	m.nspawn = cmd
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})
	// nspawn forks an intermediate child before the container's PID 1, so
	// look for the child that is systemd, every time until it is up.
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
		if err != nil {
			return err
		}
		m.PID = 0
		for _, f := range strings.Fields(string(b)) {
			comm, _ := os.ReadFile("/proc/" + f + "/comm")
			if strings.TrimSpace(string(comm)) == "systemd" {
				m.PID, _ = strconv.Atoi(f)
			}
		}
		if m.PID == 0 {
			return fmt.Errorf("no systemd under nspawn yet (children %q)", b)
		}
		m.Root = fmt.Sprintf("/proc/%d/root", m.PID)
		c, err := net.Dial("unix", filepath.Join(busDir, "system_bus_socket"))
		if err != nil {
			return err
		}
		c.Close()
		out, err := m.Systemctl("is-system-running")
		if out == "running" || out == "degraded" {
			return nil
		}
		return fmt.Errorf("system is %q: %v", out, err)
	})
	return m
}

// Systemctl runs systemctl inside the machine, as a person would by hand.
func (m *Machine) Systemctl(args ...string) (string, error) {
	all := append([]string{"-t", strconv.Itoa(m.PID), "-m", "-u", "-i", "-n", "-p", "systemctl"}, args...)
	out, err := exec.Command("nsenter", all...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
