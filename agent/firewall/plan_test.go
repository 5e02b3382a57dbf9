package firewall

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/blueprint"
)

// recorder is the applier of the plan tests: it writes down what the
// changes would do to the node instead of doing it.
type recorder struct{ calls []string }

func (r *recorder) replace(_ context.Context, table, script, hash string, stale []string) error {
	r.calls = append(r.calls, fmt.Sprintf("replace %s hash %s stale %v script:\n%s", table, hash, stale, script))
	return nil
}

func (r *recorder) delete(_ context.Context, table string) error {
	r.calls = append(r.calls, "delete "+table)
	return nil
}

// TestPlan runs the pure comparison on made-up observations: no root, no
// namespace, no nft.
func TestPlan(t *testing.T) {
	one, two := fw(ssh).Spec.Firewall, fw(ssh, web).Spec.Firewall
	renamed := *one
	renamed.Table = "alpha_edge"
	foreign := *one
	foreign.Table = "firewalld"
	made := func(f *blueprint.Firewall, seen string) applied {
		return applied{Script: digest(Render(f)), Seen: seen}
	}
	tables := func(kv ...any) state {
		s := state{Tables: map[string]applied{}}
		for i := 0; i < len(kv); i += 2 {
			s.Tables[kv[i].(string)] = kv[i+1].(applied)
		}
		return s
	}
	replace := func(f *blueprint.Firewall, stale ...string) string {
		script := Render(f)
		for _, name := range stale {
			script = fmt.Sprintf("table inet %s\ndelete table inet %s\n", name, name) + script
		}
		return fmt.Sprintf("replace %s hash %s stale %v script:\n%s", tableName(f), digest(Render(f)), stale, script)
	}
	for _, tc := range []struct {
		name       string
		fw         *blueprint.Firewall
		st         state
		obs        observed
		changes    []string // Change.String() in order
		found      string   // Found of the single replace change
		calls      []string
		planErrIs  error
		planErrHas string
	}{
		{name: "no firewall, no table of ours"},
		{name: "nothing to do",
			fw: one, st: tables("alpha", made(one, "S")), obs: observed{exists: true, seen: "S"}},
		{name: "add",
			fw: one, obs: observed{},
			changes: []string{"create firewall:alpha (table missing)"}, found: "absent",
			calls: []string{replace(one)}},
		{name: "deleted or flushed by hand",
			fw: one, st: tables("alpha", made(one, "S")), obs: observed{},
			changes: []string{"create firewall:alpha (table deleted or flushed by hand)"}, found: "absent",
			calls: []string{replace(one)}},
		{name: "blueprint changed",
			fw: two, st: tables("alpha", made(one, "S")), obs: observed{exists: true, seen: "S"},
			changes: []string{"update firewall:alpha (rule set differs from the blueprint)"}, found: "other rule set",
			calls: []string{replace(two)}},
		{name: "a table of that name we never recorded is replaced",
			fw: one, obs: observed{exists: true, seen: "S"},
			changes: []string{"update firewall:alpha (rule set differs from the blueprint)"}, found: "other rule set",
			calls: []string{replace(one)}},
		{name: "rules changed by hand",
			fw: one, st: tables("alpha", made(one, "S")), obs: observed{exists: true, seen: "S with a rule deleted"},
			changes: []string{"update firewall:alpha (rules changed by hand)"}, found: "modified",
			calls: []string{replace(one)}},
		{name: "invalid observation: an empty listing is drift, never in sync",
			fw: one, st: tables("alpha", made(one, "S")), obs: observed{exists: true},
			changes: []string{"update firewall:alpha (rules changed by hand)"}, found: "modified",
			calls: []string{replace(one)}},
		{name: "renamed: the old table goes in the same transaction",
			fw: &renamed, st: tables("alpha", made(one, "S")), obs: observed{},
			changes: []string{"create firewall:alpha_edge (table missing; replaces table alpha)"}, found: "absent",
			calls: []string{replace(&renamed, "alpha")}},
		{name: "in sync but old tables left",
			fw: one, st: tables("alpha", made(one, "S"), "alpha_old", made(two, "T"), "alpha_b", made(two, "U")), obs: observed{exists: true, seen: "S"},
			changes: []string{"update firewall:alpha (old tables to remove; replaces table alpha_b; replaces table alpha_old)"}, found: "alpha_b, alpha_old",
			calls: []string{replace(one, "alpha_b", "alpha_old")}},
		{name: "remove what Alpha made and only that",
			// The observation (a table of someone else's, say) plays no
			// part: only recorded tables are deleted, in name order.
			st: tables("alpha_z", made(one, "S"), "alpha", made(one, "S")), obs: observed{exists: true, seen: "firewalld's"},
			changes: []string{"delete firewall:alpha (table left the blueprint)", "delete firewall:alpha_z (table left the blueprint)"},
			calls:   []string{"delete alpha", "delete alpha_z"}},
		{name: "a table that is not Alpha's is refused and ours left as it is",
			fw: &foreign, st: tables("alpha", made(one, "S")), obs: observed{exists: true, seen: "firewalld's"},
			planErrIs: ErrForeignTable, planErrHas: "spec.firewall.table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.st.Tables == nil {
				tc.st = tables()
			}
			rec := &recorder{}
			p, err := plan(rec, tc.fw, tc.st, tc.obs)
			switch {
			case tc.planErrIs == nil && err != nil:
				t.Fatalf("plan error: %v", err)
			case tc.planErrIs != nil && (!errors.Is(err, tc.planErrIs) || !strings.Contains(err.Error(), tc.planErrHas)):
				t.Fatalf("plan error %v, want %v naming %q", err, tc.planErrIs, tc.planErrHas)
			}
			var got []string
			for _, c := range p {
				got = append(got, c.String())
				if err := c.Apply(context.Background()); err != nil {
					t.Fatalf("apply %s: %v", c, err)
				}
			}
			if !slices.Equal(got, tc.changes) {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.changes, "\n"))
			}
			if !slices.Equal(rec.calls, tc.calls) {
				t.Fatalf("applied:\n%s\nwant:\n%s", strings.Join(rec.calls, "\n"), strings.Join(tc.calls, "\n"))
			}
			if tc.found != "" {
				want := fmt.Sprintf("%d rules, policy input drop", len(tc.fw.Rules))
				if p[0].Found != tc.found || p[0].Want != want {
					t.Fatalf("found %q want %q; expected %q and %q", p[0].Found, p[0].Want, tc.found, want)
				}
			}
		})
	}
}
