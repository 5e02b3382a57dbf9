package chaos

import (
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// Sites added at the same moment all get their mirror consumers at the
// hub and their uplink into the hub's streams; none may be lost. In
// production mode `alpha site add` registers a site, as the tenant's
// administrator, since the leaf's credentials cannot: the twelve adds run
// at once, as a script adding sites in parallel would.
func TestConcurrentSiteRegistration(t *testing.T) {
	f := newFleet(t, 1)
	const n = 12
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		ids[i] = fmt.Sprintf("reg%02d", i)
		wg.Go(func() {
			out, err := exec.Command(Binary(t), AddSiteArgs(f.dir, f.hubs, ids[i], "n1")...).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("alpha site add %s: %v\n%s", ids[i], err, out)
			}
		})
	}
	wg.Wait()
	check.NoError(t, errors.Join(errs...))
	for _, id := range ids {
		f.addSite(SiteSpec{ID: id, OneProcess: true, Direct: true, Bundle: filepath.Join(f.dir, id, "bundle")})
	}
	ctx := bg(t, 2*time.Minute)
	for _, s := range f.sites {
		s.Leaf.WaitLog("uplink synced", 60*time.Second)
	}
	start := time.Now()
	for _, id := range ids {
		for _, st := range streams.Mirrored() {
			_, err := f.js.PushConsumer(ctx, st.Stream(), streams.MirrorConsumerConfig(id, st).Durable)
			check.NoError(t, err)
		}
		// The site's uplink reaches the hub: its node's status is there.
		check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
			_, err := Status(ctx, f.js, streams.Key(id, "n1"))
			return err
		})
	}
	t.Logf("all %d sites registered and reporting at the hub %v after the last synced", n, time.Since(start).Round(time.Millisecond))
}
