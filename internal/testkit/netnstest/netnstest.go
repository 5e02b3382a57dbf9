// Package netnstest creates throw-away network namespaces for tests of the
// OS drivers, so the real tools run without touching the machine's own
// networking.
package netnstest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/internal/testkit/check"
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

// ReportLatency reports the p50 and p99 of ds, in milliseconds, as
// benchmark metrics named like "p50-ms".
func ReportLatency(b *testing.B, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		i = min(max(i, 0), len(s)-1)
		return float64(s[i].Microseconds()) / 1000
	}
	b.ReportMetric(at(0.50), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
