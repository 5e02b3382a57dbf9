package accounts_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// BenchmarkRevokeCutoff measures how long a connected site's leaf survives
// after `site revoke` pushes its accounts (the tenant's and the site's own,
// which the leaf binds to): p50 and p99 over several sites. (Since site
// accounts it pushed only the tenant's, and the leaf stayed: the
// benchmark, not the product, which isolation_test covers.)
func BenchmarkRevokeCutoff(b *testing.B) {
	const sites = 5
	var samples []time.Duration
	for range b.N {
		e := newEnv(b, "t1")
		for i := range sites {
			site := fmt.Sprintf("s%d", i)
			l := e.startLeaf(e.addSite(site, "t1", "n1"), nil)
			check.For(b, 10*time.Second, 5*time.Millisecond, func() error {
				if !l.Connected() {
					return errors.New("not connected")
				}
				return nil
			})
			_, err := e.op.RevokeSite(site)
			check.NoError(b, err)
			start := time.Now()
			// The site's leaf binds to its own account: as `alpha site
			// revoke` does, push it with the tenant's.
			sys, err := e.op.SysConn(e.hub.ClientURL(), e.tls())
			check.NoError(b, err)
			check.NoError(b, e.op.PushSite(context.Background(), sys, "t1", site))
			sys.Close()
			check.For(b, 10*time.Second, time.Millisecond, func() error {
				if l.Connected() {
					return errors.New("still connected")
				}
				return nil
			})
			samples = append(samples, time.Since(start))
		}
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	b.ReportMetric(float64(samples[len(samples)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(samples[len(samples)*99/100].Microseconds())/1000, "p99-ms")
}
