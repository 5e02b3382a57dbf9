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
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// Sites added at the same moment all get their uplink sources on the hub's
// streams; none may be lost. (Registration is a read, modify, write of the
// stream's config.) In production mode `alpha site add` registers a site,
// as the tenant's administrator, since the leaf's credentials cannot: the
// twelve adds run at once, as a script adding sites in parallel would.
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
	// Each `site add` re-reads the stream after its write until its source
	// is there, so all are in place when the adds return; the wait allows
	// for the leaves' recheck that the open mode relies on.
	start := time.Now()
	for _, name := range streams.Uplinks() {
		check.For(t, 2*leaf.RecheckEvery, 200*time.Millisecond, func() error {
			st, err := f.js.Stream(ctx, name)
			if err != nil {
				return err
			}
			info, err := st.Info(ctx)
			if err != nil {
				return err
			}
			if len(info.Config.Sources) != n {
				return fmt.Errorf("hub stream %s has %d sources, want %d", name, len(info.Config.Sources), n)
			}
			return nil
		})
	}
	t.Logf("all %d sites registered on the %d hub streams %v after the last synced", n, len(streams.Uplinks()), time.Since(start).Round(time.Millisecond))
}
