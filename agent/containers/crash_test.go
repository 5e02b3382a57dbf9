package containers_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func TestCrashLoopIsReportedAndPaced(t *testing.T) {
	pm, _, a := setup(t)
	a.Offer(doc("  containers:\n    - name: crash\n      image: localhost/busybox:1\n      command: [/bin/sh, -c, \"exit 3\"]\n      restart: on-failure\n"))
	check.For(t, 10*time.Second, 10*time.Millisecond, func() error {
		r, _ := a.Resource("container:crash")
		if r.State != "restarting" || !strings.Contains(r.Message, "exit code 3") {
			return fmt.Errorf("container:crash reported %+v", r)
		}
		return nil
	})
	// podman's own policy restarts it at once, many times; the agent must
	// not join in at the same pace.
	start := time.Now()
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		// Inspect can race the container's exit ("read /proc/PID/cgroup:
		// no such process"): that is a retry, not a failure.
		out, err := pm.TryPodman("inspect", "--format", "{{.RestartCount}}", "crash")
		if err != nil {
			return err
		}
		n, _ := strconv.Atoi(out)
		if n < 10 {
			return fmt.Errorf("podman restarted it %d times", n)
		}
		return nil
	})
	r, _ := a.Resource("container:crash")
	t.Logf("after %v: agent repairs %d, status %+v", time.Since(start), r.Repairs, r)
	// Backoff 1 s, 2 s, 4 s...: at most 1 + log2(elapsed) restarts.
	if limit := 2 + int(time.Since(start)/time.Second); r.Repairs > uint64(limit) {
		t.Fatalf("the agent restarted a crash-looping container %d times in %v", r.Repairs, time.Since(start))
	}
}
