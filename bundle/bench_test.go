package bundle_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
)

// pattern yields n bytes of a cheap non-repeating pattern (the object store
// and the bundle see distinct content, nothing is held in memory).
type pattern struct{ n, off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n-p.off)]
	for i := range b {
		x := uint64(p.off + int64(i))
		b[i] = byte(x*2654435761>>13) ^ byte(x>>20)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// BenchmarkBundleExportImport exports and imports, with the real binary, a
// bundle of 100 signed blueprints that all name one artifact, at two
// artifact sizes: time, and the peak RSS of the exporting process and of
// the air-gapped leaf that imports. Streaming shows as peak RSS that does
// not grow with the artifact. ALPHA_BUNDLE_BENCH_MB sets the larger size
// (default 200).
func BenchmarkBundleExportImport(b *testing.B) {
	bin := os.Getenv("ALPHA_BIN")
	if bin == "" {
		b.Skip("ALPHA_BIN is not set (make bench sets it to bin/alpha)")
	}
	big := int64(200)
	if v := os.Getenv("ALPHA_BUNDLE_BENCH_MB"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		check.NoError(b, err)
		big = n
	}
	for _, mb := range []int64{20, big} {
		b.Run(fmt.Sprintf("artifact=%dMB", mb), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchBundle(b, bin, mb<<20)
			}
		})
	}
}

func benchBundle(b *testing.B, bin string, size int64) {
	ctx := context.Background()
	p := prodtest.Start(b, prodtest.Options{Tenants: []string{"acme"}})
	var nodes []string
	for i := 1; i <= 100; i++ {
		nodes = append(nodes, fmt.Sprintf("n%03d", i))
	}
	bdir := p.AddSite("s1", "acme", nil, nodes...)
	hnc, hjs := p.Admin("acme")
	sha, err := artifacts.Put(ctx, hnc, "", "payload", &pattern{n: size})
	check.NoError(b, err)
	seed, err := os.ReadFile(p.Op.PublisherSeed("acme"))
	check.NoError(b, err)
	s := &agSite{t: b, p: p, hjs: hjs, seed: seed}
	unit := fmt.Sprintf("  units:\n    - name: meter.service\n      content: |\n        [Service]\n        ExecStart=/usr/local/lib/meter/payload\n"+
		"      executable:\n        path: /usr/local/lib/meter/payload\n        artifact: {name: payload, sha256: %s}\n", sha)
	for _, n := range nodes {
		s.put("s1."+n, helloDoc(n, unit))
	}
	dir := b.TempDir()
	file := filepath.Join(dir, "s1.alpha")

	start := time.Now()
	export := exec.Command(bin, "bundle", "export", "--site", "s1", "-o", file, "--operator-dir", filepath.Join(p.Dir, "operator"),
		"--hub", p.Hub.ClientURL(), "--tls-ca", p.PKI.CA)
	out, err := export.CombinedOutput()
	if err != nil {
		b.Fatalf("export: %v: %s", err, out)
	}
	exportTime := time.Since(start)
	exportRSS := export.ProcessState.SysUsage().(*syscall.Rusage).Maxrss // KiB
	fi, err := os.Stat(file)
	check.NoError(b, err)

	leafPID, url := startLeafProc(b, bin, bdir, p.PKI.CA, filepath.Join(dir, "store"), dir)
	before := vmHWM(b, leafPID)
	start = time.Now()
	imp := exec.Command(bin, "bundle", "import", file, "--bundle", bdir, "--nats", url)
	out, err = imp.CombinedOutput()
	if err != nil {
		b.Fatalf("import: %v: %s", err, out)
	}
	importTime := time.Since(start)
	if !strings.Contains(string(out), "100 values written") || !strings.Contains(string(out), "1 artifacts written") {
		b.Fatalf("import wrote something else: %s", out)
	}
	after := vmHWM(b, leafPID)
	b.ReportMetric(float64(fi.Size())/(1<<20), "bundle-MiB")
	b.ReportMetric(exportTime.Seconds(), "export-s")
	b.ReportMetric(float64(exportRSS)/1024, "export-peak-rss-MiB")
	b.ReportMetric(importTime.Seconds(), "import-s")
	b.ReportMetric(float64(before)/1024, "leaf-rss-before-MiB")
	b.ReportMetric(float64(after)/1024, "leaf-peak-rss-MiB")
}

// startLeafProc runs `alpha leaf` air-gapped from the site bundle and
// returns its pid and client URL; it is killed when the benchmark ends.
func startLeafProc(b *testing.B, bin, bdir, ca, store, sticks string) (int, string) {
	cmd := exec.Command(bin, "leaf", "--bundle", bdir, "--tls-ca", ca, "--store", store, "--listen", "127.0.0.1:-1", "--stick-dir", sticks)
	stderr, err := cmd.StderrPipe()
	check.NoError(b, err)
	check.NoError(b, cmd.Start())
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		line := lines.Text()
		if !strings.Contains(line, "leaf ready") {
			continue
		}
		for _, f := range strings.Fields(line) {
			if u, ok := strings.CutPrefix(f, "clients="); ok {
				go io.Copy(io.Discard, stderr)
				return cmd.Process.Pid, u
			}
		}
	}
	b.Fatalf("alpha leaf exited before it was ready: %v", lines.Err())
	return 0, ""
}

// vmHWM is a process's peak RSS in KiB.
func vmHWM(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	check.NoError(b, err)
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			check.NoError(b, err)
			return n
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}
