package compliance

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// BenchmarkRepairAfterFileEdit is the time from sshd_config edited by hand
// to the enforced line being back; bounded by PollInterval (1 s).
func BenchmarkRepairAfterFileEdit(b *testing.B) {
	root := b.TempDir()
	cfg := filepath.Join(root, "etc/ssh/sshd_config")
	check.NoError(b, os.MkdirAll(filepath.Dir(cfg), 0o755))
	check.NoError(b, os.WriteFile(cfg, []byte("PermitRootLogin yes\n"), 0o644))
	d := New(driver.Env{Root: root})
	repairs := make(chan engine.Repair, 100)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: b.TempDir(), Resync: time.Hour,
		OnRepair: func(r engine.Repair) { repairs <- r }})
	check.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(`apiVersion: alpha/v1
kind: Blueprint
metadata: {name: c}
spec:
  compliance:
    policies:
      - {name: no-root-ssh, type: fileContent, mode: enforce, path: /etc/ssh/sshd_config, line: PermitRootLogin no}
`)})
	check.For(b, 5*time.Second, 10*time.Millisecond, func() error {
		if r := d.Results(); len(r) != 1 || !r[0].Pass {
			return fmt.Errorf("not enforced yet: %+v", r)
		}
		return nil
	})
	var ds []time.Duration
	for i := 0; i < 5*b.N; i++ {
		// Manual changes come at any phase of the poll, not just after a
		// repair: start each at a random point of the interval.
		time.Sleep(rand.N(PollInterval))
		t0 := time.Now()
		check.NoError(b, os.WriteFile(cfg, []byte("PermitRootLogin yes\n"), 0o644))
		select {
		case <-repairs:
			ds = append(ds, time.Since(t0))
		case <-time.After(5 * time.Second):
			b.Fatal("no repair within 5s")
		}
	}
	netnstest.ReportLatency(b, ds)
}
