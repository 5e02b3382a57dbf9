package sysctl

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// BenchmarkRepairAfterManualChange is the time from `sysctl -w` by hand to
// the value being set back. The kernel sends no notification, so this is
// dominated by PollInterval (500 ms).
func BenchmarkRepairAfterManualChange(b *testing.B) {
	d, run, _ := newDriver(b)
	repairs := make(chan engine.Repair, 100)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(b.TempDir(), "e"),
		Resync: time.Hour, OnRepair: func(r engine.Repair) { repairs <- r }})
	check.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	check.For(b, 5*time.Second, 10*time.Millisecond, func() error {
		_, err := d.Read(ctx, "net.ipv4.ip_forward")
		if v, _ := d.Read(ctx, "net.ipv4.ip_forward"); v != "1" {
			return context.DeadlineExceeded
		}
		return err
	})
	var ds []time.Duration
	for i := 0; i < 10*b.N; i++ {
		// Manual changes come at any phase of the poll, not just after a
		// repair: start each at a random point of the interval.
		time.Sleep(rand.N(PollInterval))
		t0 := time.Now()
		_, err := run.Run(ctx, nil, "sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
		check.NoError(b, err)
		select {
		case <-repairs:
			ds = append(ds, time.Since(t0))
		case <-time.After(5 * time.Second):
			b.Fatal("no repair within 5s")
		}
	}
	netnstest.ReportLatency(b, ds)
}
