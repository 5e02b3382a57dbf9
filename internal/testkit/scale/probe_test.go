package scale_test

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
)

func TestProbe(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("N"))
	lf, _ := os.Create("/tmp/sc-hub.log")
	defer lf.Close()
	h := prodtest.Start(t, prodtest.Options{Tenants: []string{scale.Tenant}, Binary: os.Getenv("ALPHA_BIN"), Env: []string{"ALPHA_PPROF=127.0.0.1:16061"}, Log: lf,
		Limits: accounts.TenantLimits{Storage: -1, Memory: 64 << 20, Streams: -1, Consumers: -1}})
	f := scale.Start(t, scale.Options{Sites: 0, Hub: h})
	pid, _ := f.HubPID()
	u0, _ := chaos.ProcUsage(pid)
	t0 := time.Now()
	f.AddSites(n)
	fmt.Printf("started %d sites in %v\n", n, time.Since(t0))
	for i := 0; i < 3; i++ {
		time.Sleep(10 * time.Second)
		u, _ := chaos.ProcUsage(pid)
		fmt.Printf("t=%v rss=%d MiB perSite=%d KiB anon=%d MiB cpu=%v\n", time.Since(t0).Round(time.Second), u.RSS>>20, (u.RSS-u0.RSS)>>10/int64(n), u.Anon>>20, u.CPU-u0.CPU)
	}
	out, _ := exec.Command("go", "tool", "pprof", "-sample_index=inuse_space", "-top", "-nodecount=40", "http://127.0.0.1:16061/debug/pprof/heap").CombinedOutput()
	os.WriteFile(fmt.Sprintf("/tmp/sc-heap-%d.txt", n), out, 0o644)
	exec.Command("curl", "-s", "-o", fmt.Sprintf("/tmp/sc-heap-%d.pb.gz", n), "http://127.0.0.1:16061/debug/pprof/heap").Run()
}
