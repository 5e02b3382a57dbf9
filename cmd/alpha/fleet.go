package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/fleet"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/hub/rollout"
)

func init() {
	register("node", "label a node: node label SITE.NODE key=value... (key- removes)", runNode)
	register("nodes", "list nodes with their labels and facts; -l selects", runNodes)
	register("fleet", "fleet apply FILE: render, sign and stage a fleet's blueprints at the hub", runFleet)
	register("rollout", "rollout start|status|pause|resume|abort FLEET", runRollout)
}

// hubFlags are the connection flags of the operator's hub commands.
type hubFlags struct{ url, creds, ca *string }

func addHubFlags(fs *flag.FlagSet) hubFlags {
	return hubFlags{
		url:   fs.String("nats", "nats://127.0.0.1:4222", "hub client URL"),
		creds: fs.String("creds", "", "credentials file (operator mode): the tenant admin's"),
		ca:    fs.String("tls-ca", "", "CA (PEM) of the hub's certificate"),
	}
}

func (h hubFlags) dial(name string) (*nats.Conn, jetstream.JetStream, error) {
	return dialHub(name, *h.url, *h.creds, *h.ca)
}

func runNode(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "label" {
		return errors.New("usage: alpha node label [--nats URL --creds FILE --tls-ca CA] SITE.NODE key=value... [key-...]")
	}
	fs := newFlags("node label")
	hf := addHubFlags(fs)
	pos, err := parseInterleaved(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return errors.New("usage: alpha node label SITE.NODE key=value... [key-...]")
	}
	set, remove, err := inventory.ParseLabels(pos[1:])
	if err != nil {
		return err
	}
	nc, js, err := hf.dial("alpha-node-label")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	labels, err := inventory.SetLabels(ctx, js, pos[0], set, remove)
	if err != nil {
		return err
	}
	fmt.Printf("%s\t%s\n", pos[0], formatLabels(labels))
	return nil
}

// parseInterleaved parses flags wherever they stand among the positional
// arguments (alpha node label a.n1 role=x --creds F), which flag.Parse
// alone stops at, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func formatLabels(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+m[k])
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ",")
}

func runNodes(ctx context.Context, args []string) error {
	fs := newFlags("nodes")
	hf := addHubFlags(fs)
	sel := fs.String("l", "", "label selector: key=value,key!=value,key,!key (facts as facts.arch=arm64)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	s, err := inventory.ParseSelector(*sel)
	if err != nil {
		return fmt.Errorf("-l: %w", err)
	}
	nc, js, err := hf.dial("alpha-nodes")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nodes, err := inventory.List(ctx, js, s)
	if err != nil {
		return err
	}
	printNodes(os.Stdout, nodes)
	return nil
}

func printNodes(w io.Writer, nodes []inventory.Node) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPHASE\tARCH\tOS\tKERNEL\tCPUS\tMEMORY\tVERSION\tLABELS")
	for _, n := range nodes {
		phase, arch, osname, kernel, cpus, mem, ver := "-", "-", "-", "-", "-", "-", "-"
		if st := n.Status; st != nil {
			phase = st.Phase
			if f := st.Facts; f != nil {
				arch, osname, kernel, ver = f.Arch, f.OS, f.Kernel, f.Version
				cpus, mem = fmt.Sprint(f.CPUs), fmt.Sprintf("%d MiB", f.MemoryMB)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Key(), phase, arch, osname, kernel, cpus, mem, ver, formatLabels(n.Labels))
	}
	tw.Flush()
}

func runFleet(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "apply" {
		return errors.New("usage: alpha fleet apply --key SEED [--start] [--dry-run] [--nats URL --creds FILE --tls-ca CA] FILE")
	}
	fs := newFlags("fleet apply")
	hf := addHubFlags(fs)
	keyFile := fs.String("key", "", "publisher seed file (OPERATOR-DIR/keys/TENANT-publisher.nk; required): every node's blueprint is signed here, never at the hub")
	start := fs.Bool("start", false, "start the rollout at once (alpha rollout start FLEET)")
	dry := fs.Bool("dry-run", false, "render and validate for every selected node, print the nodes, stage nothing")
	file, err := parseOne(fs, args[1:], "FILE")
	if err != nil {
		return err
	}
	if *keyFile == "" {
		return errors.New("fleet apply: --key (the publisher seed) is required")
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	f, err := fleet.Parse(data, filepath.Dir(file))
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	seed, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	sel, _ := inventory.ParseSelector(f.Spec.Selector) // checked by Parse
	nc, js, err := hf.dial("alpha-fleet-apply")
	if err != nil {
		return err
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	nodes, err := inventory.List(ctx, js, sel)
	if err != nil {
		return err
	}
	meta, staged, err := f.Build(nodes, seed, time.Now())
	if err != nil {
		return err
	}
	batches := meta.Policy.Plan(meta.Nodes)
	if *dry {
		fmt.Printf("fleet %s: %d node(s) render and validate; %d batch(es); nothing staged\n", f.Metadata.Name, len(staged), len(batches))
		for i, b := range batches {
			fmt.Printf("  batch %d: %s\n", i+1, strings.Join(b, " "))
		}
		return nil
	}
	if err := fleet.Stage(ctx, js, meta, staged); err != nil {
		return err
	}
	fmt.Printf("fleet %s generation %s: %d node(s) signed and staged in %d batch(es)\n", f.Metadata.Name, meta.Generation, len(staged), len(batches))
	if !*start {
		fmt.Printf("start it: alpha rollout start %s\n", f.Metadata.Name)
		return nil
	}
	if _, err := rollout.Start(ctx, js, f.Metadata.Name, time.Now()); err != nil {
		return err
	}
	fmt.Printf("rollout of %s started\n", f.Metadata.Name)
	return nil
}

func runRollout(ctx context.Context, args []string) error {
	usage := errors.New("usage: alpha rollout start|status|pause|resume|abort [--nats URL --creds FILE --tls-ca CA] FLEET")
	if len(args) == 0 {
		return usage
	}
	verb := args[0]
	fs := newFlags("rollout " + verb)
	hf := addHubFlags(fs)
	watch := fs.Bool("w", false, "status: follow until the rollout finishes")
	asJSON := fs.Bool("json", false, "status: print the rollout document")
	name, err := parseOne(fs, args[1:], "FLEET")
	if err != nil {
		return usage
	}
	nc, js, err := hf.dial("alpha-rollout")
	if err != nil {
		return err
	}
	defer nc.Close()
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var r *rollout.Rollout
	switch verb {
	case "start":
		r, err = rollout.Start(octx, js, name, time.Now())
	case "pause":
		r, err = rollout.Control(octx, js, name, rollout.Paused)
	case "resume":
		r, err = rollout.Control(octx, js, name, rollout.Running)
	case "abort":
		r, err = rollout.Control(octx, js, name, rollout.Aborted)
	case "status":
		return rolloutStatus(ctx, js, name, *watch, *asJSON)
	default:
		return usage
	}
	if err != nil {
		return err
	}
	fmt.Printf("rollout of %s (generation %s): %s, %d node(s) in %d batch(es)\n", name, r.Generation, r.State, len(r.Nodes), len(r.Batches))
	return nil
}

func rolloutStatus(ctx context.Context, js jetstream.JetStream, name string, watch, asJSON bool) error {
	tty := isTerminal(os.Stdout)
	for {
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		r, _, err := rollout.Load(lctx, js, name)
		cancel()
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(os.Stdout, r)
		}
		if watch && tty {
			fmt.Print("\033[H\033[2J")
		}
		printRollout(os.Stdout, r, tty)
		if !watch || r.Done() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// printRollout shows a rollout per batch and per site; on a terminal each
// line carries a progress bar of its good nodes.
func printRollout(w io.Writer, r *rollout.Rollout, bars bool) {
	c := r.Count(nil)
	fmt.Fprintf(w, "fleet %s  generation %s  %s", r.Fleet, r.Generation, r.State)
	if r.Reason != "" {
		fmt.Fprintf(w, ": %s", r.Reason)
	}
	fmt.Fprintf(w, "\n%d node(s): %s\n\n", len(r.Nodes), phaseCounts(c))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BATCH\tNODES\tPROGRESS\tPHASES")
	for i, b := range r.Batches {
		mark := " "
		if i == r.Batch && !r.Done() {
			mark = ">"
		}
		bc := r.Count(b)
		fmt.Fprintf(tw, "%s%d\t%d\t%s\t%s\n", mark, i+1, len(b), progress(bc[rollout.NodeGood], len(b), bars), phaseCounts(bc))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SITE\tNODES\tPROGRESS\tPHASES")
	sites, by := r.Sites()
	for _, s := range sites {
		sc := r.Count(by[s])
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", s, len(by[s]), progress(sc[rollout.NodeGood], len(by[s]), bars), phaseCounts(sc))
	}
	tw.Flush()
	var problems []string
	for _, s := range sites {
		for _, k := range by[s] {
			if n := r.Nodes[k]; n.Phase == rollout.NodeFailed || n.Phase == rollout.NodePending {
				problems = append(problems, fmt.Sprintf("  %s %s: %s", k, n.Phase, n.Reason))
			}
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "\n%s\n", strings.Join(problems, "\n"))
	}
}

func phaseCounts(c map[string]int) string {
	var parts []string
	for _, p := range []string{rollout.NodeGood, rollout.NodeUpdating, rollout.NodePending, rollout.NodeWaiting, rollout.NodeFailed, rollout.NodeRestored, rollout.NodeSkipped} {
		if c[p] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c[p], strings.ToLower(p)))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

func progress(done, total int, bar bool) string {
	pct := 0
	if total > 0 {
		pct = done * 100 / total
	}
	if !bar {
		return fmt.Sprintf("%d/%d", done, total)
	}
	const width = 20
	fill := width * pct / 100
	return "[" + strings.Repeat("#", fill) + strings.Repeat(".", width-fill) + fmt.Sprintf("] %3d%%", pct)
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
