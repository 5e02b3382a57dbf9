package bundle_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
)

// ocAfter calls fn once n bytes were written through it.
type ocAfter struct {
	n     int64
	wrote atomic.Int64
	fn    func()
}

func (a *ocAfter) Write(p []byte) (int, error) {
	if a.wrote.Add(int64(len(p))) >= a.n && a.wrote.Load()-int64(len(p)) < a.n {
		a.fn()
	}
	return len(p), nil
}

// TestExportFailsWhenHubDiesMidArtifact: an export whose hub is shut down
// while an artifact streams out fails, naming the artifact, instead of
// waiting for as long as its connection reconnects (for ever here).
func TestExportFailsWhenHubDiesMidArtifact(t *testing.T) {
	ctx := context.Background()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	p.AddSite("s1", "acme", nil, "n1")
	hnc, hjs := p.Admin("acme")
	sha, err := artifacts.Put(ctx, hnc, "", "payload", &pattern{n: 64 << 20})
	check.NoError(t, err)
	seed, err := os.ReadFile(p.Op.PublisherSeed("acme"))
	check.NoError(t, err)
	s := &agSite{t: t, p: p, hjs: hjs, seed: seed}
	s.put("s1.n1", helloDoc("n1", fmt.Sprintf("  units:\n    - name: meter.service\n      content: |\n        [Service]\n        ExecStart=/usr/local/lib/meter/payload\n"+
		"      executable:\n        path: /usr/local/lib/meter/payload\n        artifact: {name: payload, sha256: %s}\n", sha)))

	died := make(chan struct{})
	out := &ocAfter{n: 8 << 20, fn: func() { p.Hub.Shutdown(); close(died) }}
	done := make(chan error, 1)
	go func() {
		_, err := bundle.Export(ctx, hjs, bundle.ExportConfig{Site: "s1", Tenant: "acme", Seed: seed}, bundle.NewWriter(out, bundle.Manifest{}, nil))
		done <- err
	}()
	select {
	case <-died:
	case err := <-done:
		t.Fatalf("export returned %v after %d bytes, before the hub died", err, out.wrote.Load())
	}
	check.FailsNaming(t, done, 3*time.Minute, "bundle export from a hub that died mid-artifact", "object payload")
}
