package chaos

import (
	"fmt"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/leaf"
)

// Sites that connect at the same moment all register their uplink sources
// on the hub's streams; none may be lost. (Registration is a read, modify,
// write of the stream's config.)
func TestConcurrentSiteRegistration(t *testing.T) {
	f := newFleet(t, 1)
	const n = 12
	for i := range n {
		f.addSite(SiteSpec{ID: fmt.Sprintf("reg%02d", i), OneProcess: true, Direct: true})
	}
	ctx := bg(t, 2*time.Minute)
	for _, s := range f.sites {
		s.Leaf.WaitLog("uplink synced", 60*time.Second)
	}
	// Each leaf verifies its own write and rechecks every ~30 s, so a source
	// a racing site overwrote after that verification comes back within one
	// recheck.
	start := time.Now()
	for _, name := range []string{"KV_status", "TELEMETRY", "EVENTS"} {
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
	t.Logf("all %d sites registered on the 3 hub streams %v after the last synced", n, time.Since(start).Round(time.Millisecond))
}
