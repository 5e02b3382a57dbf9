package network

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// BenchmarkRepairAfterMTUChange is the time from `ip link set mtu` by hand to
// the MTU being set back (ip monitor -> engine pass -> ip link set).
func BenchmarkRepairAfterMTUChange(b *testing.B) {
	d, run := newNS(b)
	repairs := make(chan engine.Repair, 1000)
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: filepath.Join(b.TempDir(), "e"),
		Resync: time.Hour, OnRepair: func(r engine.Repair) { repairs <- r }})
	check.NoError(b, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	check.For(b, 5*time.Second, 10*time.Millisecond, converged(b, run))
	var ds []time.Duration
	for i := 0; i < 30*b.N; i++ {
		t0 := time.Now()
		_, err := run.Run(ctx, nil, "ip", "link", "set", "dev", "a0", "mtu", "1500")
		check.NoError(b, err)
	wait:
		for {
			select {
			case r := <-repairs:
				if r.Change.Want == "1400" {
					ds = append(ds, time.Since(t0))
					break wait
				}
			case <-time.After(5 * time.Second):
				b.Fatal("no repair within 5s")
			}
		}
	}
	netnstest.ReportLatency(b, ds)
}
