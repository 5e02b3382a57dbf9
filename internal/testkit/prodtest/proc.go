package prodtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a hub running as an `alpha hub` child process.
type Proc struct {
	bin  string
	env  []string
	log  io.Writer
	args []string

	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan struct{}
	clientURL string
	leafURL   string
}

// PID is the hub process's id.
func (p *Proc) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}

var readyField = regexp.MustCompile(`(\w+)=("[^"]*"|\S+)`)

func startProc(t testing.TB, bin string, env []string, log io.Writer, args []string) *Proc {
	t.Helper()
	p := &Proc{bin: bin, env: env, log: log, args: args}
	t.Cleanup(p.stop)
	if err := p.start(t); err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs the hub and waits for its "hub ready" line, which names the
// addresses it bound; they are pinned for restarts.
func (p *Proc) start(t testing.TB) error {
	t.Helper()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("prodtest: starting %s hub: %w", p.bin, err)
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	var tail []string
	var tailMu sync.Mutex
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if p.log != nil {
				fmt.Fprintln(p.log, line)
			}
			tailMu.Lock()
			tail = append(tail[max(0, len(tail)-20):], line)
			tailMu.Unlock()
			if strings.Contains(line, `msg="hub ready"`) {
				select {
				case ready <- line:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	select {
	case line := <-ready:
		fields := map[string]string{}
		for _, m := range readyField.FindAllStringSubmatch(line, -1) {
			fields[m[1]] = strings.Trim(m[2], `"`)
		}
		p.mu.Lock()
		p.cmd, p.exited = cmd, exited
		p.clientURL, p.leafURL = fields["clients"], fields["leafnodes"]
		p.mu.Unlock()
		p.pin("--listen", hostPort(t, p.clientURL))
		p.pin("--leaf-listen", hostPort(t, p.leafURL))
		return nil
	case <-exited:
		tailMu.Lock()
		defer tailMu.Unlock()
		return fmt.Errorf("prodtest: hub exited before it was ready:\n%s", strings.Join(tail, "\n"))
	case <-time.After(2 * time.Minute):
		// Kept as the current process, so stop ends it.
		p.mu.Lock()
		p.cmd, p.exited = cmd, exited
		p.mu.Unlock()
		return errors.New("prodtest: hub not ready after 2 min")
	}
}

func (p *Proc) pin(flag, value string) {
	for i := range p.args {
		if p.args[i] == flag && i+1 < len(p.args) {
			p.args[i+1] = value
		}
	}
}

// stop ends the hub with SIGTERM and waits for it (idempotent).
func (p *Proc) stop() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// restart stops the hub and starts it again on the same ports.
func (p *Proc) restart(t testing.TB) error {
	t.Helper()
	p.stop()
	return p.start(t)
}
