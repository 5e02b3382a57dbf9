package facts_test

import (
	"context"
	"runtime"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/facts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func TestCollectReadsThisMachine(t *testing.T) {
	f, err := facts.Collect(context.Background())
	check.NoError(t, err)
	check.Equal(t, f.CPUs, runtime.NumCPU())
	check.Equal(t, f.Arch, runtime.GOARCH)
	for name, v := range map[string]string{"os": f.OS, "kernel": f.Kernel, "version": f.Version} {
		if strings.TrimSpace(v) == "" {
			t.Errorf("%s is empty", name)
		}
	}
	if f.MemoryMB < 64 {
		t.Errorf("memoryMB %d: not this machine's memory", f.MemoryMB)
	}
	// Selectors see them under facts.*.
	if l := f.Labels(); l["facts.cpus"] == "" || l["facts.kernel"] != f.Kernel {
		t.Errorf("labels %v", l)
	}
}
