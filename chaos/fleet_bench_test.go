package chaos

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// The benchmarks sample a figure many times inside one run (make bench runs
// them with -benchtime 1x) and report its distribution as metrics named
// QUANTITY-p50, -p99, -min, -max and -n; cmd/benchtable turns those into
// BENCHMARKS.md.

// report adds the distribution of samples of quantity q (e.g. "ms").
func report(b *testing.B, q string, samples []float64) {
	b.Helper()
	Report(b, q, samples)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(s []float64) float64 {
	c := slices.Clone(s)
	slices.Sort(c)
	return c[len(c)/2]
}

// BenchmarkPutToApplied is the time from a blueprint put at the hub to the
// change on the node's disk: sequential puts to one site, and rounds of puts
// to every one of 100 sites (one `alpha site` process each: leaf and agent
// in one process).
func BenchmarkPutToApplied(b *testing.B) {
	b.Run("sites=1", func(b *testing.B) {
		f := newFleet(b, 1)
		s := f.addSite(SiteSpec{ID: "s1", Direct: true})
		ctx := bg(b, 5*time.Minute)
		f.put(ctx, s, 1, 1)
		f.waitConverged(60 * time.Second)
		var samples []float64
		for gen := 2; gen <= 201; gen++ {
			start := time.Now()
			f.put(ctx, s, gen, 1)
			for AppliedGen(s.Root, 0) != gen {
				if time.Since(start) > 30*time.Second {
					b.Fatalf("generation %d not applied after 30s", gen)
				}
				time.Sleep(200 * time.Microsecond)
			}
			samples = append(samples, ms(time.Since(start)))
		}
		report(b, "ms", samples)
	})
	b.Run("sites=100", func(b *testing.B) {
		const sites = 100
		f, before := scaleFleet(b, sites)
		ctx := bg(b, 10*time.Minute)
		rss, cpu := hubPerSite(b, f.hubs[0], before, sites)
		report(b, "hubRssPerSiteKiB", rss)
		report(b, "hubCpuPerSite%", cpu)
		var samples []float64
		for gen := 2; gen <= 11; gen++ {
			puts := make([]time.Time, len(f.sites))
			for i, s := range f.sites {
				puts[i] = time.Now()
				f.put(ctx, s, gen, 1)
			}
			done := make([]bool, len(f.sites))
			left := len(f.sites)
			deadline := time.Now().Add(60 * time.Second)
			for left > 0 {
				for i, s := range f.sites {
					if !done[i] && AppliedGen(s.Root, 0) == gen {
						done[i] = true
						left--
						samples = append(samples, ms(time.Since(puts[i])))
					}
				}
				if time.Now().After(deadline) {
					b.Fatalf("generation %d: %d sites not applied after 60s", gen, left)
				}
				time.Sleep(time.Millisecond)
			}
		}
		report(b, "ms", samples)
	})
}

// scaleFleet starts a hub and n single-process sites (`alpha site`) one
// after the other, and waits until all of them applied generation 1. It returns
// the hub's footprint before the first site started.
func scaleFleet(b testing.TB, n int) (*fleet, Footprint) {
	f := newFleet(b, 1)
	idle, err := f.hubs[0].Usage()
	check.NoError(b, err)
	ctx := bg(b, 10*time.Minute)
	for i := range n {
		s := f.addSite(SiteSpec{ID: fmt.Sprintf("s%03d", i), OneProcess: true, Direct: true})
		// One at a time: sites registering at the same moment lose each
		// other's hub sources (TestConcurrentSiteRegistration).
		s.Leaf.WaitLog("uplink synced", time.Minute)
		f.put(ctx, s, 1, 1)
	}
	f.waitConverged(3 * time.Minute)
	return f, idle
}

// hubPerSite samples the hub for 30 s with n idle sites connected: RSS
// above what it used before any site (each second) and CPU (per 5 s
// window), both divided by n.
func hubPerSite(b testing.TB, hub *Hub, before Footprint, n int) (rss, cpu []float64) {
	last, err := hub.Usage()
	check.NoError(b, err)
	lastAt := time.Now()
	for i := 1; i <= 30; i++ {
		time.Sleep(time.Second)
		u, err := hub.Usage()
		check.NoError(b, err)
		rss = append(rss, float64(u.RSS-before.RSS)/1024/float64(n))
		if i%5 == 0 {
			now := time.Now()
			cpu = append(cpu, 100*float64(u.CPU-last.CPU)/float64(now.Sub(lastAt))/float64(n))
			last, lastAt = u, now
		}
	}
	return rss, cpu
}

// BenchmarkFleetCatchUp45s is the time from the end of a 45 s outage (link cut)
// to the blueprint put during it applied on the node. The 10-minute outage
// is chaos-only (BenchmarkFleetCatchUp10m, -tags chaos).
func BenchmarkFleetCatchUp45s(b *testing.B) { benchCatchUp(b, 45*time.Second, 5) }

func benchCatchUp(b *testing.B, outage time.Duration, rounds int) {
	f := newFleet(b, 1)
	s := f.addSite(SiteSpec{ID: "out"})
	ctx := bg(b, time.Duration(rounds)*(outage+2*time.Minute))
	f.put(ctx, s, 1, 1)
	f.waitConverged(60 * time.Second)
	var samples []float64
	for gen := 2; gen < 2+rounds; gen++ {
		s.SetLinks(Cut)
		f.put(ctx, s, gen, 1)
		time.Sleep(outage) // the outage itself is the thing measured around
		restored := time.Now()
		s.SetLinks(Up)
		for AppliedGen(s.Root, 0) != gen {
			if time.Since(restored) > 2*time.Minute {
				b.Fatalf("generation %d not applied 2 min after the outage", gen)
			}
			time.Sleep(5 * time.Millisecond)
		}
		samples = append(samples, ms(time.Since(restored)))
		b.Logf("outage %v: caught up %v after restore", outage, time.Since(restored).Round(time.Millisecond))
	}
	report(b, "ms", samples)
}

// BenchmarkSiteIdle is the footprint of an idle `alpha site` (leaf and agent
// in one process, converged on a small blueprint, uplink connected): RSS
// sampled every second and CPU per 5 s window, over a minute.
func BenchmarkSiteIdle(b *testing.B) {
	f := newFleet(b, 1)
	s := f.addSite(SiteSpec{ID: "idle", OneProcess: true, Direct: true})
	ctx := bg(b, 3*time.Minute)
	f.put(ctx, s, 1, 1)
	f.waitConverged(60 * time.Second)
	time.Sleep(5 * time.Second) // let start-up work settle before sampling
	var rss, anon, cpu []float64
	last, err := s.Leaf.Usage()
	check.NoError(b, err)
	lastAt := time.Now()
	for i := 1; i <= 60; i++ {
		time.Sleep(time.Second)
		u, err := s.Leaf.Usage()
		check.NoError(b, err)
		rss = append(rss, float64(u.RSS)/(1<<20))
		anon = append(anon, float64(u.Anon)/(1<<20))
		if i%5 == 0 {
			now := time.Now()
			cpu = append(cpu, 100*float64(u.CPU-last.CPU)/float64(now.Sub(lastAt)))
			last, lastAt = u, now
		}
	}
	report(b, "rssMiB", rss)
	report(b, "anonMiB", anon)
	report(b, "cpu%", cpu)
}

// BenchmarkNoopReconcile compares a reconcile of 120 files (100 files and 20
// sysctl drop-ins under etc/sysctl.d, written as files: a test must not set
// this machine's kernel parameters) by the agent's files driver with the
// same content converged by ansible-playbook with a local connection: first
// run and no-op re-run. The agent's pass is Plan plus Apply inside the
// running agent; ansible's is a whole ansible-playbook run, because that is
// what each tool does per pass.
func BenchmarkNoopReconcile(b *testing.B) {
	ansible := check.NeedCommand(b, "ansible-playbook", "apt-get install -y ansible-core")
	content := reconcileContent()
	bp := blueprint.Empty()
	bp.Metadata.Name = "bench"
	for _, c := range content {
		bp.Spec.Files = append(bp.Spec.Files, blueprint.File{Path: c.path, Content: c.body, Mode: "0644"})
	}
	ctx := context.Background()
	pass := func(d *files.Driver) (time.Duration, int) {
		start := time.Now()
		p, err := d.Plan(ctx, bp)
		check.NoError(b, err)
		for _, c := range p {
			check.NoError(b, c.Apply(ctx))
		}
		return time.Since(start), len(p)
	}
	var aFirst, aNoop []float64
	for range 20 {
		root := b.TempDir()
		d, err := files.New(driver.Env{Root: root, StateDir: b.TempDir()})
		check.NoError(b, err)
		took, n := pass(d)
		check.Equal(b, n, len(content))
		aFirst = append(aFirst, ms(took))
		for range 5 {
			took, n = pass(d)
			check.Equal(b, n, 0)
			aNoop = append(aNoop, ms(took))
		}
	}
	var xFirst, xNoop []float64
	for range 3 {
		root := b.TempDir()
		play := filepath.Join(b.TempDir(), "play.yml")
		check.NoError(b, os.WriteFile(play, ansiblePlay(root, content), 0o644))
		run := func(wantChanged int) time.Duration {
			start := time.Now()
			cmd := exec.Command(ansible, "-i", "localhost,", "-c", "local", play)
			cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_LOCALHOST_WARNING=0")
			out, err := cmd.CombinedOutput()
			took := time.Since(start)
			if err != nil {
				b.Fatalf("ansible-playbook: %v\n%s", err, out)
			}
			if want := fmt.Sprintf("changed=%d ", wantChanged); !strings.Contains(string(out), want) {
				b.Fatalf("ansible-playbook: want %s in the recap:\n%s", want, out[max(0, len(out)-400):])
			}
			return took
		}
		xFirst = append(xFirst, ms(run(2))) // two tasks, each a loop
		xNoop = append(xNoop, ms(run(0)))
	}
	report(b, "alphaFirstMs", aFirst)
	report(b, "alphaNoopMs", aNoop)
	report(b, "ansibleFirstMs", xFirst)
	report(b, "ansibleNoopMs", xNoop)
	b.ReportMetric(median(xFirst)/median(aFirst), "firstRatio-p50")
	b.ReportMetric(median(xNoop)/median(aNoop), "noopRatio-p50")
}

type fileContent struct{ path, body string }

func reconcileContent() []fileContent {
	var c []fileContent
	for i := range 100 {
		c = append(c, fileContent{fmt.Sprintf("/etc/bench/app%03d.conf", i), fmt.Sprintf("# managed\nkey%d=value%d\nthreads=%d\n", i, i, i%8+1)})
	}
	for i := range 20 {
		c = append(c, fileContent{fmt.Sprintf("/etc/sysctl.d/90-bench-%02d.conf", i), fmt.Sprintf("net.core.bench_value_%d = %d\n", i, 1000+i)})
	}
	return c
}

// ansiblePlay makes the two directories and copies every file with its
// content inline, as a hand-written playbook would.
func ansiblePlay(root string, content []fileContent) []byte {
	var s strings.Builder
	fmt.Fprintf(&s, "- hosts: localhost\n  gather_facts: false\n  tasks:\n")
	fmt.Fprintf(&s, "    - file: {path: %q, state: directory, mode: \"0755\"}\n      loop: [%q, %q]\n",
		"{{ item }}", filepath.Join(root, "etc/bench"), filepath.Join(root, "etc/sysctl.d"))
	fmt.Fprintf(&s, "    - copy: {dest: \"{{ item.dest }}\", content: \"{{ item.content }}\", mode: \"0644\"}\n      loop:\n")
	for _, c := range content {
		fmt.Fprintf(&s, "        - {dest: %q, content: %q}\n", filepath.Join(root, c.path), c.body)
	}
	return []byte(s.String())
}
