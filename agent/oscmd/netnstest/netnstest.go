// Package netnstest creates throw-away network namespaces for tests of the
// OS drivers, so the real tools run without touching the machine's own
// networking.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"testing"

	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/internal/check"
)

// New creates a network namespace named alpha-test-<random> with its
// loopback up, deletes it in t.Cleanup, and returns its name and a runner
// whose commands run inside it. It skips (fails in CI) without root or ip.
func New(t testing.TB) (string, oscmd.Runner) {
	t.Helper()
	check.NeedRoot(t)
	check.NeedCommand(t, "ip", "run .ci/setup-os.sh (apt-get install -y iproute2)")
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := "alpha-test-" + hex.EncodeToString(b)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns delete %s: %v: %s", name, err, out)
		}
	})
	r := oscmd.Netns(name)
	if _, err := r.Run(context.Background(), nil, "ip", "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	return name, r
}
