// Package podmantest starts a private podman REST service for a test: its
// own containers.conf, storage and events log in a temp dir, so tests touch
// neither the machine's containers nor its podman configuration.
package podmantest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

const how = "run .ci/setup-podman.sh as root (installs podman, runc, conmon, catatonit, busybox-static)"

// Service is a running `podman system service` private to one test.
type Service struct {
	Dir string // holds the configs, storage, runroot and socket
	URI string // unix:///.../podman.sock, for the bindings
	env []string

	podman string
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts the service and stops it (and every container in it) when the
// test ends. It skips the test, or fails it under CI, when root, podman,
// runc, conmon or a static busybox are missing.
func Start(t testing.TB) *Service {
	t.Helper()
	check.NeedRoot(t)
	podman := check.NeedCommand(t, "podman", how)
	check.NeedCommand(t, "runc", how)
	check.NeedCommand(t, "conmon", how)
	check.NeedCommand(t, "busybox", how)
	_, err := os.Stat("/usr/libexec/podman/catatonit")
	check.Need(t, err == nil, "catatonit (the container init)", how)
	// The socket path must stay short (108 bytes), so not t.TempDir().
	dir, err := os.MkdirTemp("", "alpha-podman-")
	check.NoError(t, err)
	s := &Service{Dir: dir, URI: "unix://" + filepath.Join(dir, "podman.sock")}
	conf := fmt.Sprintf(`[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "%[1]s/events.log"
tmp_dir = "%[1]s/tmp"
volume_path = "%[1]s/volumes"
static_dir = "%[1]s/storage/libpod"
`, dir)
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = \"%[1]s/storage\"\nrunroot = \"%[1]s/run\"\n", dir)
	check.NoError(t, os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644))
	check.NoError(t, os.WriteFile(filepath.Join(dir, "storage.conf"), []byte(storage), 0o644))
	s.env = append(os.Environ(),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"))

	s.podman = podman
	s.serve(t)
	t.Cleanup(func() {
		// A container podman is busy restarting can survive one rm.
		for i := 0; i < 20; i++ {
			s.TryPodman("rm", "-af", "-t", "0")
			if out, err := s.TryPodman("ps", "-aq"); err == nil && out == "" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		s.stopService()
		reapUnder(t, dir)
		unmountUnder(dir)
		os.RemoveAll(dir)
	})
	return s
}

// serve starts the API service and waits for its socket.
func (s *Service) serve(t testing.TB) {
	t.Helper()
	sock := filepath.Join(s.Dir, "podman.sock")
	os.Remove(sock)
	cmd := exec.Command(s.podman, "system", "service", "--time=0", s.URI)
	cmd.Env = s.env
	logf, err := os.OpenFile(filepath.Join(s.Dir, "service.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	check.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	s.mu.Lock()
	s.cmd, s.exited = cmd, exited
	s.mu.Unlock()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// stopService stops the API service (containers keep running: conmon
// watches them, not the service).
func (s *Service) stopService() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Restart stops the API service and starts it again on the same socket, as
// a package upgrade or a crash would.
func (s *Service) Restart(t testing.TB) {
	t.Helper()
	s.stopService()
	s.serve(t)
}

// Env is the environment a podman command needs to see this service's
// containers.
func (s *Service) Env() []string { return s.env }

// TryPodman runs the podman CLI against this service's storage.
func (s *Service) TryPodman(args ...string) (string, error) {
	cmd := exec.Command("podman", args...)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Podman runs the podman CLI and fails the test on error.
func (s *Service) Podman(t testing.TB, args ...string) string {
	t.Helper()
	out, err := s.TryPodman(args...)
	check.NoError(t, err)
	return out
}

// Busybox imports a one-layer image made of the static busybox as ref (there
// is no registry here). Its sh, sleep and a few other applets are linked.
func (s *Service) Busybox(t testing.TB, ref string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	check.NoError(t, err)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	check.NoError(t, os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755))
	data, err := os.ReadFile(bb)
	check.NoError(t, err)
	check.NoError(t, os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755))
	for _, a := range []string{"sh", "sleep", "true", "false", "cat", "echo", "ls", "test", "kill"} {
		check.NoError(t, os.Symlink("busybox", filepath.Join(rootfs, "bin", a)))
	}
	cmd := exec.Command("sh", "-c", `tar -C "$1" -c . | podman import - "$2"`, "sh", rootfs, ref)
	cmd.Env = s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("podman import %s: %v: %s", ref, err, out)
	}
}

// reapUnder kills what podman started for this service and left behind
// (conmon monitors, cleanup commands) and deletes their runc containers: they
// all name dir on their command line, so nothing else is touched.
func reapUnder(t testing.TB, dir string) {
	// conmon exits by itself once its cleanup command is done: give it time.
	for i := 0; i < 50 && len(leftovers(dir)) > 0; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range leftovers(dir) {
		t.Logf("podmantest: killing leftover %s (pid %d)", filepath.Base(p.args[0]), p.pid)
		syscall.Kill(p.pid, syscall.SIGKILL)
		for i, a := range p.args {
			if a == "-c" && i+1 < len(p.args) && filepath.Base(p.args[0]) == "conmon" {
				exec.Command("runc", "delete", "--force", p.args[i+1]).Run()
			}
		}
	}
}

type proc struct {
	pid  int
	args []string
}

// leftovers lists conmon and podman processes that name dir.
func leftovers(dir string) []proc {
	var out []proc
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), dir+"/") {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if base := filepath.Base(args[0]); base != "conmon" && base != "podman" {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err == nil && pid != os.Getpid() {
			out = append(out, proc{pid, args})
		}
	}
	return out
}

// unmountUnder lazily unmounts anything a crashed test left mounted under
// dir (a container's shm), deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
