package firewall

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// BenchmarkRepairAfterFlush is the time from `nft flush ruleset` by hand to
// the agent's table being back (nft monitor -> engine pass -> nft -f).
func BenchmarkRepairAfterFlush(b *testing.B) {
	d, run := newDriver(b)
	repairs := engineWith(b, d, []byte(doc))
	check.For(b, 5*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(list(b, run), "alpha:ssh") {
			return fmt.Errorf("not applied")
		}
		return nil
	})
	var ds []time.Duration
	for i := 0; i < 30*b.N; i++ {
		t0 := time.Now()
		_, err := run.Run(context.Background(), nil, "nft", "flush", "ruleset")
		check.NoError(b, err)
		select {
		case r := <-repairs:
			if r.Err != nil {
				b.Fatal(r.Err)
			}
			ds = append(ds, time.Since(t0))
		case <-time.After(5 * time.Second):
			b.Fatal("no repair within 5s")
		}
	}
	netnstest.ReportLatency(b, ds)
}
