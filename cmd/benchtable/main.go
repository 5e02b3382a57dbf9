// Command benchtable runs the Go benchmarks (or reads their output) and
// writes BENCHMARKS.md: the machine, the date and each figure's median, p99
// and spread.
//
//	benchtable -o BENCHMARKS.md [-in old-output.txt]... -- go test -run '^$' -bench . -benchtime 1x ./...
//
// Benchmarks report a figure's distribution as metrics QUANTITY-p50,
// QUANTITY-p99, QUANTITY-min, QUANTITY-max and QUANTITY-n (see
// chaos/bench_test.go); other metrics are listed as they are.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

type inputs []string

func (i *inputs) String() string     { return strings.Join(*i, ",") }
func (i *inputs) Set(s string) error { *i = append(*i, s); return nil }

func main() {
	out := flag.String("o", "BENCHMARKS.md", "file to write")
	var in inputs
	flag.Var(&in, "in", "also read benchmark output from this file (repeatable; skipped if missing), e.g. a chaos-only run")
	flag.Parse()
	if err := run(*out, in, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func run(out string, in []string, cmdline []string) error {
	var all bytes.Buffer
	for _, f := range in {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			// An earlier chaos-only run may not exist; its rows stay empty.
			fmt.Fprintf(os.Stderr, "benchtable: %s does not exist; skipped\n", f)
			continue
		}
		if err != nil {
			return err
		}
		all.Write(b)
		all.WriteByte('\n')
	}
	var runErr error
	if len(cmdline) > 0 {
		cmd := exec.Command(cmdline[0], cmdline[1:]...)
		cmd.Stdout = io.MultiWriter(os.Stdout, &all)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			// Write what was measured, then fail.
			runErr = fmt.Errorf("%s: %w", strings.Join(cmdline, " "), err)
		}
	}
	results := parse(&all)
	if len(results) == 0 {
		return fmt.Errorf("no benchmark results (%v)", runErr)
	}
	var sources []string
	for _, f := range in {
		if _, err := os.Stat(f); err == nil {
			sources = append(sources, "`"+f+"`")
		}
	}
	if len(cmdline) > 0 {
		sources = append(sources, "this run")
	}
	kept, err := handWritten(out)
	if err != nil {
		return err
	}
	doc := append(render(results, time.Now().UTC(), sources), kept...)
	if err := os.WriteFile(out, doc, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "benchtable: wrote %s (%d benchmarks)\n", out, len(results))
	return runErr
}

// marker divides the generated tables from the hand-written sections below
// them (analyses, runs done by hand at sizes `make bench` does not reach). A
// run replaces what is above it and keeps the rest as it is.
const marker = "<!-- benchtable: everything below this line is written by hand and kept by make bench -->"

// handWritten returns the marker and what follows it in the file at path,
// or just the marker for a file that does not exist yet. A file without the
// marker is refused: overwriting it would lose whatever was written there.
func handWritten(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return []byte("\n" + marker + "\n"), nil
	}
	if err != nil {
		return nil, err
	}
	i := bytes.Index(b, []byte(marker))
	if i < 0 {
		return nil, fmt.Errorf("%s has no line %q: add it above the hand-written sections (or remove the file) so they are not overwritten", path, marker)
	}
	return append([]byte("\n"), b[i:]...), nil
}

// result is one benchmark line.
type result struct {
	name    string // without the -GOMAXPROCS suffix
	pkg     string
	metrics map[string]float64
	order   []string
}

func parse(r io.Reader) []*result {
	var res []*result
	byName := map[string]*result{}
	pkg := ""
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pending := "" // a benchmark name whose figures went to the next line (-v)
	for sc.Scan() {
		line := sc.Text()
		if pending != "" {
			if f := strings.Fields(line); len(f) > 0 {
				if _, err := strconv.Atoi(f[0]); err == nil {
					line = pending + " " + line
				}
			}
			pending = ""
		}
		if f := strings.Fields(line); len(f) == 1 && strings.HasPrefix(f[0], "Benchmark") {
			pending = f[0]
			continue
		}
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		r := &result{name: name, pkg: pkg, metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			r.metrics[f[i+1]] = v
			r.order = append(r.order, f[i+1])
		}
		if old, ok := byName[name]; ok { // a later run (-in file, then this run) wins
			*old = *r
			continue
		}
		byName[name] = r
		res = append(res, r)
	}
	return res
}

// figure is a row of the main table.
type figure struct {
	bench, quantity, label, unit string
}

// figures are the headline rows, in the order the README promises them.
var figures = []figure{
	{"BenchmarkPutToApplied/sites=1", "ms", "hub put → change applied on the node, 1 site (200 sequential puts)", "ms"},
	{"BenchmarkPutToApplied/sites=100", "ms", "hub put → change applied on the node, 100 sites (10 rounds of a put to every site)", "ms"},
	{"BenchmarkFleetCatchUp45s", "ms", "catch-up after a 45 s outage (link restored → blueprint put during it applied)", "ms"},
	{"BenchmarkFleetCatchUp10m", "ms", "catch-up after a 10 min outage (chaos-only: `make chaos`)", "ms"},
	{"BenchmarkCatchUpSiteRestarted", "ms", "catch-up of a site restarted while its uplink was cut (15-35 s offline after the restart; link restored → blueprint put during the cut applied)", "ms"},
	{"BenchmarkClusterFailover", "ms", "3-member hub cluster, member holding the site's link SIGKILLed: put at a survivor → applied on the node", "ms"},
	{"BenchmarkClusterFailover", "putMs", "the same: the put itself (waits for a new blueprints stream leader when the killed member led it)", "ms"},
	{"BenchmarkClusterFailover", "idleCpu%", "3-member hub cluster, one site, idle: the members' CPU summed, 5 s windows", "% of a core"},
	{"BenchmarkClusterScale", "relink-s", "3-member hub cluster, ALPHA_SCALE_CLUSTER_SITES sites (150 by default) over the members: the member with the most links SIGKILLed → each of its sites linked to a survivor", "s"},
	{"BenchmarkClusterScale", "applied-ms", "the same: one put per node through a survivor right after the kill → applied on the node", "ms"},
	{"BenchmarkClusterScale", "applied-consumer-leader-lost-ms", "the same, the sites whose blueprints mirror consumer the killed member led (they wait for its raft election)", "ms"},
	{"BenchmarkSiteIdle", "rssMiB", "idle `alpha site` (leaf + agent) RSS, sampled each second for 1 min", "MiB"},
	{"BenchmarkSiteIdle", "anonMiB", "idle `alpha site`: of that RSS, anonymous memory (heap, stacks; the rest is the mapped binary)", "MiB"},
	{"BenchmarkSiteIdle", "cpu%", "idle `alpha site` (leaf + agent) CPU, 5 s windows over 1 min", "% of a core"},
	{"BenchmarkNoopReconcile", "alphaFirstMs", "first run, 120 files: Alpha files driver", "ms"},
	{"BenchmarkNoopReconcile", "ansibleFirstMs", "first run, 120 files: ansible-playbook, local connection", "ms"},
	{"BenchmarkNoopReconcile", "firstRatio", "first run: ansible / Alpha", "×"},
	{"BenchmarkNoopReconcile", "alphaNoopMs", "no-op re-run, 120 files: Alpha files driver", "ms"},
	{"BenchmarkNoopReconcile", "ansibleNoopMs", "no-op re-run, 120 files: ansible-playbook, local connection", "ms"},
	{"BenchmarkNoopReconcile", "noopRatio", "no-op re-run: ansible / Alpha", "×"},
	{"BenchmarkPutToApplied/sites=100", "hubRssPerSiteKiB", "hub RSS per connected site (100 sites, each an `alpha site` process), 1 s samples", "KiB"},
	{"BenchmarkPutToApplied/sites=100", "hubCpuPerSite%", "hub CPU per connected idle site (100 sites), 5 s windows", "% of a core"},
	{"BenchmarkFleetScale", "hubRssPerSiteKiB", "hub RSS per connected idle site, fleet benchmark (SCALE_SITES sites, 300 by default; hub its own process; sampled after SCALE_IDLE_S, 10 min by default)", "KiB"},
	{"BenchmarkFleetScale", "hubCpuPerSite%", "hub CPU per connected idle site, fleet benchmark, 5 s windows", "% of a core"},
	{"BenchmarkFleetScale", "applied-ms", "fan-out: one put per site to the whole fleet → applied on the node (5 rounds)", "ms"},
	{"BenchmarkFleetScale", "hubstatus-ms", "fan-out: the same put → good status back at the hub", "ms"},
	{"BenchmarkFleetScale", "storm-s", "reconnect storm: hub restarted with the fleet linked → a revision put then applied on every node", "s"},
	{"BenchmarkFleetScale", "start-s", "fleet start: sites issued, registered and linked (batches of 50)", "s"},
	{"BenchmarkFleet100", "applied-ms", "hub put → applied on the node, 100 sites of the scale harness (10 rounds of a put to every site)", "ms"},
	{"BenchmarkFleet100", "hubstatus-ms", "the same put → good status back at the hub, 100 sites", "ms"},
	{"BenchmarkRollout1000", "rollout-s", "rollout of one fleet revision to 1,000 simulated nodes (100 sites × 10), 10 batches of 10%, gate 0 s: start → Completed", "s"},
	{"BenchmarkRollout1000", "hubCpu%", "hub CPU during that rollout (controller, puts, mirrors, status)", "% of a core"},
	{"BenchmarkRollout1000", "apply-s", "`fleet apply` for those 1,000 nodes: render, validate, sign, stage", "s"},
	{"BenchmarkStatus10k", "site-ms", "`alpha status --site X` with 10,000 node keys at the hub", "ms"},
	{"BenchmarkStatus10k", "all-ms", "`alpha status` (table and summary of all 10,000 nodes)", "ms"},
	{"BenchmarkTenantFlood", "quietMs", "another tenant's put → applied, no flood (operator mode, TLS)", "ms"},
	{"BenchmarkTenantFlood", "floodLocalMs", "the same while a rogue site floods telemetry that stays at the site (the machine's share)", "ms"},
	{"BenchmarkTenantFlood", "floodMs", "the same while the hub sources the rogue site's flood (up to its quota)", "ms"},
	{"BenchmarkTenantFlood", "p99Ratio", "flood p99 / no-flood p99 (goal: 2)", "×"},
	{"BenchmarkTenantFlood", "p99RatioToLocal", "flood p99 / flood-at-the-site-only p99 (the hub's share)", "×"},
	{"BenchmarkTenantFlood", "hubRssBeforeMiB", "hub RSS before the flood (two tenants, two sites)", "MiB"},
	{"BenchmarkTenantFlood", "hubRssFloodMiB", "hub RSS during the flood, 250 ms samples", "MiB"},
	{"BenchmarkTenantFlood", "hubCpuFlood%", "hub CPU during the flood", "% of a core"},
	{"BenchmarkTenantFlood", "hubStoreGrowthMiB", "hub store growth during 30 s of flood (the rogue's quota: 32 MiB, stored twice)", "MiB"},
	{"BenchmarkTenantFlood", "floodStoredMiB/s", "the rogue site's flood, stored at the site", "MiB/s"},
}

func render(res []*result, now time.Time, sources []string) []byte {
	by := map[string]*result{}
	for _, r := range res {
		by[r.name] = r
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# Benchmarks\n\nWritten by `make bench` (cmd/benchtable) on %s.\n\n", now.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Machine: %s\n\n", machine())
	if len(sources) > 0 {
		fmt.Fprintf(&b, "Results from: %s (a later source wins for the same benchmark).\n\n", strings.Join(sources, ", "))
	}
	b.WriteString("Each figure is sampled many times within one run: the median (p50), the 99th percentile and the\n" +
		"spread (min–max) of those samples, and how many there were. A dash is a figure this run did not\n" +
		"produce (the 10 min catch-up runs only under `make chaos`).\n\n")
	b.WriteString("| figure | median | p99 | spread (min–max) | samples |\n|---|---:|---:|---:|---:|\n")
	used := map[string]bool{}
	for _, f := range figures {
		r := by[f.bench]
		cell := func(stat string) (string, bool) {
			if r == nil {
				return "–", false
			}
			v, ok := r.metrics[f.quantity+"-"+stat]
			if !ok {
				return "–", false
			}
			return num(v), true
		}
		p50, ok := cell("p50")
		if ok {
			used[f.bench] = true
		}
		p99, _ := cell("p99")
		lo, _ := cell("min")
		hi, _ := cell("max")
		n := "–"
		if r != nil {
			if v, ok := r.metrics[f.quantity+"-n"]; ok {
				n = strconv.Itoa(int(v))
			}
		}
		spread := "–"
		if lo != "–" {
			spread = lo + "–" + hi
		}
		unit := " " + f.unit
		if !ok {
			unit = ""
		}
		fmt.Fprintf(&b, "| %s | %s%s | %s | %s | %s |\n", f.label, p50, unit, p99, spread, n)
	}
	var tel, other []*result
	for _, r := range res {
		if used[r.name] {
			continue
		}
		if strings.Contains(strings.ToLower(r.name+" "+r.pkg), "telemetry") {
			tel = append(tel, r)
		} else {
			other = append(other, r)
		}
	}
	b.WriteString("\n## Telemetry\n\n")
	if len(tel) == 0 {
		b.WriteString("No telemetry benchmarks in this run.\n")
	} else {
		list(&b, tel)
	}
	if len(other) > 0 {
		b.WriteString("\n## Other benchmarks\n\n")
		list(&b, other)
	}
	return b.Bytes()
}

func list(b *bytes.Buffer, rs []*result) {
	slices.SortFunc(rs, func(x, y *result) int { return strings.Compare(x.pkg+x.name, y.pkg+y.name) })
	b.WriteString("| benchmark | package | metrics |\n|---|---|---|\n")
	for _, r := range rs {
		var m []string
		for _, k := range r.order {
			m = append(m, num(r.metrics[k])+" "+k)
		}
		fmt.Fprintf(b, "| %s | %s | %s |\n", r.name, r.pkg, strings.Join(m, ", "))
	}
}

func num(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

// machine describes where the figures were taken.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		mem = fmt.Sprintf(", %.1f GiB RAM", float64(kb)/(1<<20))
	}
	osName := runtime.GOOS
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				osName = strings.Trim(v, `"`)
			}
		}
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = ", Linux " + strings.TrimSpace(string(b))
	}
	return fmt.Sprintf("%s, %d cores%s; %s%s; %s", cpu, runtime.NumCPU(), mem, osName, kernel, runtime.Version())
}
