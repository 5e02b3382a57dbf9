// Package firewall is the agent driver for spec.firewall: an nftables rule
// set in a table the agent owns, replaced in one nft transaction so a
// half-applied firewall is never left behind, and restored when someone
// deletes a rule or flushes the rule set by hand.
package firewall

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
)

// DefaultTable is the table the agent owns when the blueprint names none.
const DefaultTable = "alpha"

// ErrRejected means nft refused the new rule set; the old one stays in force.
var ErrRejected = errors.New("firewall: nft rejected the rule set")

// ErrForeignTable means a spec named a table that is not Alpha's (see
// blueprint.CheckFirewallTable); nothing is applied and the table is left
// alone.
var ErrForeignTable = errors.New("firewall: not a table of Alpha's")

// Driver manages spec.firewall. Plan may be called any number of times; its
// change replaces the whole table at once, so applying it twice is harmless.
type Driver struct {
	env driver.Env
	run oscmd.Runner

	mu    sync.Mutex
	state state
}

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Watcher = (*Driver)(nil)
	_ applier        = (*Driver)(nil)
)

// state is what the driver remembers across restarts: the tables it made,
// and what each looked like right after it was applied, so that any later
// difference is drift.
type state struct {
	Tables map[string]applied `json:"tables"` // table name -> last applied
}

type applied struct {
	Script string `json:"script"` // hash of the script that made it
	Seen   string `json:"seen"`   // canonical listing right after the apply
}

// New builds the driver; run is how nft is invoked (empty prefix in
// production, a network namespace in tests).
func New(env driver.Env, run oscmd.Runner) (*Driver, error) {
	if env.Log == nil {
		env.Log = slog.Default()
	}
	if err := os.MkdirAll(env.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("firewall: state dir: %w", err)
	}
	d := &Driver{env: env, run: run, state: state{Tables: map[string]applied{}}}
	b, err := os.ReadFile(d.statePath())
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &d.state); err != nil {
			return nil, fmt.Errorf("firewall: %s: %w", d.statePath(), err)
		}
		if d.state.Tables == nil {
			d.state.Tables = map[string]applied{}
		}
		// An agent from before the alpha prefix was required may have
		// recorded another program's table as its own: forget it rather
		// than delete it, since nothing says the agent created it.
		for name := range d.state.Tables {
			if err := blueprint.CheckFirewallTable(name); err != nil {
				env.Log.Warn("firewall: forgetting a recorded table that is not Alpha's; it is left in place", "table", name, "err", err)
				delete(d.state.Tables, name)
			}
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, err
	}
	return d, nil
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "firewall" }

func (d *Driver) statePath() string { return filepath.Join(d.env.StateDir, "firewall.json") }

// ResourceID is the id of the firewall table in plans and drift events.
func ResourceID(table string) string { return blueprint.ResourceID("firewall", table) }

// Plan observes the table the blueprint wants, then leaves the decision to
// plan.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	d.mu.Lock()
	st := state{Tables: make(map[string]applied, len(d.state.Tables))}
	for name, a := range d.state.Tables {
		st.Tables[name] = a
	}
	d.mu.Unlock()
	var obs observed
	if fw := bp.Spec.Firewall; fw != nil {
		// A table that is not Alpha's is not even listed; plan refuses it.
		if name := tableName(fw); blueprint.CheckFirewallTable(name) == nil {
			var err error
			if obs, err = d.observe(ctx, name); err != nil {
				return nil, err
			}
		}
	}
	return plan(d, bp.Spec.Firewall, st, obs)
}

// applier is what the changes of a plan do to the node: *Driver in
// production, a recorder in the tests of plan.
type applier interface {
	replace(ctx context.Context, table, script, hash string, stale []string) error
	delete(ctx context.Context, table string) error
}

// plan compares the wanted firewall (nil: none), what the driver recorded
// of the tables it made (st) and what observe found of the wanted table. It
// does no I/O, so unit tests call it with made-up observations; only the
// changes' Apply touch the node, through a.
//
// It returns at most one change per table: replace it (created, changed or
// drifted) or delete it. Only tables recorded in st are ever deleted.
func plan(a applier, fw *blueprint.Firewall, st state, obs observed) (driver.Plan, error) {
	want := ""
	if fw != nil {
		want = tableName(fw)
		// Validation refuses this already; the driver refuses too, so a
		// spec that skipped validation cannot replace another program's
		// table. Alpha's own table stays as it was.
		if err := blueprint.CheckFirewallTable(want); err != nil {
			return nil, fmt.Errorf("%w: spec.firewall.table: %w", ErrForeignTable, err)
		}
	}
	var stale []string
	for name := range st.Tables {
		if name != want {
			stale = append(stale, name)
		}
	}
	sort.Strings(stale)
	var p driver.Plan
	if fw == nil {
		for _, name := range stale {
			p = append(p, driver.NewChange(ResourceID(name), driver.Delete, "table left the blueprint", func(ctx context.Context) error {
				return a.delete(ctx, name)
			}))
		}
		return p, nil
	}
	script := Render(fw)
	hash := digest(script)
	prev, known := st.Tables[want]
	var detail, found string
	switch {
	case !obs.exists:
		detail, found = "table missing", "absent"
		if known {
			detail = "table deleted or flushed by hand"
		}
	case !known || prev.Script != hash:
		detail, found = "rule set differs from the blueprint", "other rule set"
	case prev.Seen != obs.seen:
		detail, found = "rules changed by hand", "modified"
	case len(stale) > 0:
		detail, found = "old tables to remove", strings.Join(stale, ", ")
	}
	if detail == "" {
		return nil, nil
	}
	op := driver.Update
	if !obs.exists {
		op = driver.Create
	}
	// Old tables (the table was renamed) go in the same transaction, so
	// the node is never without the agent's rules.
	full := script
	for _, name := range stale {
		full = fmt.Sprintf("table inet %s\ndelete table inet %s\n", name, name) + full
		detail += "; replaces table " + name
	}
	c := driver.NewChange(ResourceID(want), op, detail, func(ctx context.Context) error {
		return a.replace(ctx, want, full, hash, stale)
	})
	c.Found, c.Want = found, fmt.Sprintf("%d rules, policy input %s", len(fw.Rules), or(fw.Policy.Input, "accept"))
	return append(p, c), nil
}

func tableName(fw *blueprint.Firewall) string { return or(fw.Table, DefaultTable) }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:8])
}

// observed is one table as nft lists it.
type observed struct {
	exists bool
	seen   string // canonical listing, see canonical
}

// observe lists the table and returns a canonical form of it: the JSON of
// its chains and rules without handles, which nft renumbers.
func (d *Driver) observe(ctx context.Context, table string) (observed, error) {
	out, err := d.run.Run(ctx, nil, "nft", "-j", "list", "table", "inet", table)
	if err != nil {
		var ee *oscmd.Error
		if errors.As(err, &ee) && strings.Contains(ee.Stderr, "No such file or directory") {
			return observed{}, nil
		}
		return observed{}, fmt.Errorf("firewall: observing table %s: %w", table, err)
	}
	s, err := canonical(out)
	return observed{exists: true, seen: s}, err
}

func canonical(out []byte) (string, error) {
	var doc struct {
		Nftables []map[string]map[string]any `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return "", fmt.Errorf("firewall: reading nft -j output: %w", err)
	}
	var items []map[string]map[string]any
	for _, it := range doc.Nftables {
		if _, ok := it["metainfo"]; ok {
			continue
		}
		for _, obj := range it {
			delete(obj, "handle")
		}
		items = append(items, it)
	}
	b, err := json.Marshal(items)
	return string(b), err
}

// replace checks the script with nft -c first, then runs it: one nft -f is
// one kernel transaction, so the old table stays whole if anything fails.
func (d *Driver) replace(ctx context.Context, table, script, hash string, stale []string) error {
	if _, err := d.run.Run(ctx, []byte(script), "nft", "-c", "-f", "-"); err != nil {
		return driver.Terminal(fmt.Errorf("%w: table %s: %w", ErrRejected, table, err))
	}
	if _, err := d.run.Run(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("%w: table %s: %w", ErrRejected, table, err)
	}
	obs, err := d.observe(ctx, table)
	if err != nil {
		return err
	}
	return d.record(func(s *state) {
		s.Tables[table] = applied{Script: hash, Seen: obs.seen}
		for _, name := range stale {
			delete(s.Tables, name)
		}
	})
}

func (d *Driver) delete(ctx context.Context, table string) error {
	// Creating before deleting makes the delete succeed whether or not the
	// table is there, in one transaction.
	script := fmt.Sprintf("table inet %s\ndelete table inet %s\n", table, table)
	if _, err := d.run.Run(ctx, []byte(script), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("firewall: deleting table %s: %w", table, err)
	}
	return d.record(func(s *state) { delete(s.Tables, table) })
}

func (d *Driver) record(fn func(*state)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(&d.state)
	b, _ := json.MarshalIndent(d.state, "", "  ")
	return fileio.WriteFile(d.statePath(), b, 0o600)
}

// Render turns the blueprint's firewall into one nft script that deletes and
// recreates the agent's table. It is pure, so tests and the hub can look at
// exactly what a node will load.
func Render(fw *blueprint.Firewall) string {
	t := tableName(fw)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", t, t, t)
	policies := map[string]string{"input": fw.Policy.Input, "forward": fw.Policy.Forward, "output": fw.Policy.Output}
	for _, chain := range []string{"input", "forward", "output"} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s priority filter; policy %s;\n", chain, chain, or(policies[chain], "accept"))
		if chain == "input" && or(fw.Policy.Input, "accept") == "drop" {
			// A default-drop input chain must not cut the node off from
			// itself or from replies to its own connections.
			b.WriteString("\t\tiifname \"lo\" accept comment \"alpha:loopback\"\n")
			b.WriteString("\t\tct state established,related accept comment \"alpha:established\"\n")
		}
		for i, r := range fw.Rules {
			if or(r.Chain, "input") == chain {
				fmt.Fprintf(&b, "\t\t%s\n", rule(i, r))
			}
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

func rule(i int, r blueprint.FirewallRule) string {
	var parts []string
	if r.Interface != "" {
		dir := "iifname"
		if r.Chain == "output" {
			dir = "oifname"
		}
		parts = append(parts, fmt.Sprintf("%s %s", dir, strconv.Quote(r.Interface)))
	}
	if r.Source != "" {
		fam := "ip"
		if p, err := netip.ParsePrefix(r.Source); err == nil && p.Addr().Is6() {
			fam = "ip6"
		} else if a, err := netip.ParseAddr(r.Source); err == nil && a.Is6() {
			fam = "ip6"
		}
		parts = append(parts, fmt.Sprintf("%s saddr %s", fam, r.Source))
	}
	switch {
	case r.Port != 0:
		parts = append(parts, fmt.Sprintf("%s dport %d", r.Protocol, r.Port))
	case r.Ports != "":
		parts = append(parts, fmt.Sprintf("%s dport %s", r.Protocol, r.Ports))
	case r.Protocol == "icmp":
		parts = append(parts, "meta l4proto { icmp, ipv6-icmp }")
	case r.Protocol != "":
		parts = append(parts, "meta l4proto "+r.Protocol)
	}
	parts = append(parts, r.Action)
	name := r.Name
	if name == "" {
		name = fmt.Sprintf("rule%d", i)
	}
	parts = append(parts, "comment "+strconv.Quote("alpha:"+name))
	return strings.Join(parts, " ")
}

// Watch notices drift as it happens through nft monitor (every table, chain
// and rule change in the namespace). If the monitor cannot run or dies it is
// restarted after a wait growing from 1 s to 30 s, with a reconcile asked for
// each time, so drift that happened meanwhile is still found.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	return d.run.Monitor(ctx, d.env.Log, notify, "nft", "monitor")
}
