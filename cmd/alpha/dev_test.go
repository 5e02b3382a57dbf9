package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
)

// TestDevStackAsInREADME runs the real binary's dev stack and the commands
// the README tells a user to type, against it.
func TestDevStackAsInREADME(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "alpha")
	tags := os.Getenv("ALPHA_TAGS") // the Makefile's TAGS
	if tags == "" {
		tags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"
	}
	build := exec.Command("go", "build", "-tags", tags, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// The hub binds a port of its own choosing; the stack prints it.
	dir := t.TempDir()
	dev := exec.Command(bin, "dev", "--dir", dir, "--listen", "127.0.0.1:-1", "--metrics-listen", "", "--ui-listen", "127.0.0.1:-1")
	stderr, err := dev.StderrPipe()
	check.NoError(t, err)
	check.NoError(t, dev.Start())
	t.Cleanup(func() {
		dev.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { dev.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			dev.Process.Kill()
		}
	})
	ready := make(chan struct{})
	var url, dashboard string // written before ready is closed
	go func() {
		sc := bufio.NewScanner(stderr)
		once := false
		for sc.Scan() {
			line := sc.Text()
			if u, ok := strings.CutPrefix(line, "Alpha dev stack is running: hub "); ok && url == "" {
				url, _, _ = strings.Cut(u, ",")
			}
			if u, ok := strings.CutPrefix(strings.TrimSpace(line), "open "); ok && dashboard == "" {
				dashboard, _, _ = strings.Cut(u, " ")
			}
			if !once && strings.Contains(line, "nats kv put blueprints dev.dev-1") {
				once = true
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		t.Fatal("alpha dev did not print what to type next")
	}
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":-1") {
		t.Fatalf("alpha dev did not print the hub's bound address: %q", url)
	}

	hello, err := os.ReadFile("../../examples/hello.yaml")
	check.NoError(t, err)
	_, err = stack.NATS(t, url, "kv", "put", "blueprints", "dev.dev-1", string(hello))
	check.NoError(t, err)
	stack.WaitFile(t, 10*time.Second, filepath.Join(dir, "root/etc/hello.conf"), "greeting=hi\n")

	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		out, err := stack.NATS(t, url, "kv", "get", "status", "dev.dev-1", "--raw")
		if err != nil || !strings.Contains(out, `"phase":"Converged"`) {
			return fmt.Errorf("status: %v %s", err, out)
		}
		return nil
	})
	out, err := exec.Command(bin, "status", "--nats", url).CombinedOutput()
	check.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	// Header, the node, the summary line (then any firing alerts).
	if len(lines) < 3 || !strings.Contains(lines[1], "dev-1") || !strings.Contains(lines[1], "Converged") || !strings.HasSuffix(lines[1], "connected") ||
		!strings.HasPrefix(lines[2], "1 nodes in 1 sites: Converged 1;") {
		t.Fatalf("alpha status printed:\n%s", out)
	}
	// The dashboard it printed shows the node, on loopback, without sign-in.
	if !strings.HasPrefix(dashboard, "http://127.0.0.1:") {
		t.Fatalf("alpha dev did not print the dashboard's bound address: %q", dashboard)
	}
	resp, err := http.Get(dashboard)
	check.NoError(t, err)
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(page), `data-node="dev.dev-1" data-phase="Converged"`) {
		t.Fatalf("dashboard %s answered %s:\n%s", dashboard, resp.Status, page)
	}
}
