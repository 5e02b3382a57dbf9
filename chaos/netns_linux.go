package chaos

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace a test created; it is deleted in t.Cleanup.
// Processes run in it through Wrap; the test reaches them through Dial.
type Netns struct {
	Name string
}

// NewNetns creates a namespace with its loopback up. Root only.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	n := &Netns{Name: name}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	n.Run(t, "ip", "link", "set", "lo", "up")
	return n
}

// Wrap is the command prefix that runs a command inside the namespace.
func (n *Netns) Wrap() []string { return []string{"ip", "netns", "exec", n.Name} }

// Run runs a command inside the namespace and fails the test on error.
func (n *Netns) Run(t testing.TB, args ...string) {
	t.Helper()
	if out, err := n.Try(args...); err != nil {
		t.Fatalf("in netns %s: %s: %v: %s", n.Name, strings.Join(args, " "), err, out)
	}
}

// Try runs a command inside the namespace and returns its output.
func (n *Netns) Try(args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	return string(out), err
}

// Dial connects to addr from inside the namespace: the socket is created
// by a thread that has entered the namespace and keeps belonging to it.
func (n *Netns) Dial(addr string) (net.Conn, error) {
	runtime.LockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", n.Name, err)
	}
	c, derr := net.DialTimeout("tcp", addr, 2*time.Second)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread is stuck in the namespace: leave it locked so the
		// runtime ends it instead of reusing it.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("setns back from %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return c, derr
}

// Veth joins two namespaces with a veth pair, addresses 10.199.0.1/30 (a)
// and 10.199.0.2/30 (b), and returns the interface names.
func Veth(t testing.TB, a, b *Netns) (ifA, ifB string) {
	t.Helper()
	ifA, ifB = "va", "vb"
	if out, err := exec.Command("ip", "-n", a.Name, "link", "add", ifA, "type", "veth", "peer", "name", ifB, "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("veth between %s and %s: %v: %s", a.Name, b.Name, err, out)
	}
	a.Run(t, "ip", "addr", "add", "10.199.0.1/30", "dev", ifA)
	b.Run(t, "ip", "addr", "add", "10.199.0.2/30", "dev", ifB)
	a.Run(t, "ip", "link", "set", ifA, "up")
	b.Run(t, "ip", "link", "set", ifB, "up")
	return ifA, ifB
}
