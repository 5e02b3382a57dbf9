package sysctl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
)

// recorder is the applier of the plan tests: it writes down what the
// changes would do to the node instead of doing it.
type recorder struct{ calls []string }

func (r *recorder) set(_ context.Context, key, value, found string) error {
	r.calls = append(r.calls, fmt.Sprintf("set %s=%s (was %s)", key, value, found))
	return nil
}

func (r *recorder) restore(_ context.Context, key, value string) error {
	r.calls = append(r.calls, fmt.Sprintf("restore %s=%s", key, value))
	return nil
}

func (r *recorder) persist(content string) error {
	r.calls = append(r.calls, fmt.Sprintf("persist %q", content))
	return nil
}

// TestPlan runs the pure comparison on made-up observations: no root, no
// namespace, no sysctl binary.
func TestPlan(t *testing.T) {
	const fwd, rng, syn = "net.ipv4.ip_forward", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies"
	dropIn := func(kv ...string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return render(m)
	}
	noKey := fmt.Errorf("%w: %q (nothing at /proc/sys/net/ipv4/no_such_key)", ErrNoSuchKey, "net.ipv4.no_such_key")
	for _, tc := range []struct {
		name      string
		want      map[string]string
		orig      map[string]string
		obs       observed
		changes   []string // Change.String() in order
		calls     []string // what applying every change does, in order
		failed    []error  // errors.Is targets of the change that fails, if any
		planError string   // substring of Plan's error; "" for none
	}{
		{name: "nothing wanted, nothing owned"},
		{name: "nothing to do",
			want: map[string]string{fwd: "1", rng: "20000  30000"},
			orig: map[string]string{fwd: "0"},
			obs:  observed{values: map[string]string{fwd: "1", rng: "20000 30000"}, dropIn: dropIn(fwd, "1", rng, "20000 30000")}},
		{name: "add",
			want:    map[string]string{fwd: "1"},
			obs:     observed{values: map[string]string{fwd: "0"}},
			changes: []string{`update sysctl:net.ipv4.ip_forward (net.ipv4.ip_forward is "0", want "1")`, "update file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)"},
			calls:   []string{"set net.ipv4.ip_forward=1 (was 0)", fmt.Sprintf("persist %q", dropIn(fwd, "1"))}},
		{name: "vector normalized before comparing and writing",
			want:    map[string]string{rng: "20000\t 30000 "},
			obs:     observed{values: map[string]string{rng: "32768 60999"}, dropIn: dropIn(rng, "20000 30000")},
			changes: []string{`update sysctl:net.ipv4.ip_local_port_range (net.ipv4.ip_local_port_range is "32768 60999", want "20000 30000")`},
			calls:   []string{"set net.ipv4.ip_local_port_range=20000 30000 (was 32768 60999)"}},
		{name: "drop-in edited by hand",
			want:    map[string]string{fwd: "1"},
			obs:     observed{values: map[string]string{fwd: "1"}, dropIn: dropIn(fwd, "0")},
			changes: []string{"update file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)"},
			calls:   []string{fmt.Sprintf("persist %q", dropIn(fwd, "1"))}},
		{name: "remove what Alpha set and only that",
			// syn is the node's own setting, never named in a blueprint:
			// it has no original recorded and is not touched.
			want: nil,
			orig: map[string]string{rng: "32768 60999", fwd: "0"},
			obs:  observed{values: map[string]string{syn: "1"}, dropIn: dropIn(fwd, "1", rng, "20000 30000")},
			changes: []string{
				`delete sysctl:net.ipv4.ip_forward (net.ipv4.ip_forward left the blueprint; restoring "0")`,
				`delete sysctl:net.ipv4.ip_local_port_range (net.ipv4.ip_local_port_range left the blueprint; restoring "32768 60999")`,
				"delete file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)",
			},
			calls: []string{"restore net.ipv4.ip_forward=0", "restore net.ipv4.ip_local_port_range=32768 60999", `persist ""`}},
		{name: "a key that stays is not restored",
			want:    map[string]string{fwd: "1"},
			orig:    map[string]string{fwd: "0", rng: "32768 60999"},
			obs:     observed{values: map[string]string{fwd: "1"}, dropIn: dropIn(fwd, "1", rng, "20000 30000")},
			changes: []string{`delete sysctl:net.ipv4.ip_local_port_range (net.ipv4.ip_local_port_range left the blueprint; restoring "32768 60999")`, "update file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)"},
			calls:   []string{"restore net.ipv4.ip_local_port_range=32768 60999", fmt.Sprintf("persist %q", dropIn(fwd, "1"))}},
		{name: "sets, then restores, then the drop-in, keys sorted",
			want: map[string]string{syn: "0", fwd: "1"},
			orig: map[string]string{rng: "1 2"},
			obs:  observed{values: map[string]string{syn: "1", fwd: "0"}},
			changes: []string{
				`update sysctl:net.ipv4.ip_forward (net.ipv4.ip_forward is "0", want "1")`,
				`update sysctl:net.ipv4.tcp_syncookies (net.ipv4.tcp_syncookies is "1", want "0")`,
				`delete sysctl:net.ipv4.ip_local_port_range (net.ipv4.ip_local_port_range left the blueprint; restoring "1 2")`,
				"update file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)",
			},
			calls: []string{"set net.ipv4.ip_forward=1 (was 0)", "set net.ipv4.tcp_syncookies=0 (was 1)", "restore net.ipv4.ip_local_port_range=1 2", fmt.Sprintf("persist %q", dropIn(fwd, "1", syn, "0"))}},
		{name: "unknown key fails alone and stays out of the drop-in",
			want: map[string]string{fwd: "1", "net.ipv4.no_such_key": "1"},
			obs:  observed{values: map[string]string{fwd: "0"}, errs: map[string]error{"net.ipv4.no_such_key": noKey}},
			changes: []string{
				`update sysctl:net.ipv4.ip_forward (net.ipv4.ip_forward is "0", want "1")`,
				`update sysctl:net.ipv4.no_such_key (spec.sysctl.net.ipv4.no_such_key: no such sysctl key: "net.ipv4.no_such_key" (nothing at /proc/sys/net/ipv4/no_such_key) (terminal))`,
				"update file:/etc/sysctl.d/90-alpha.conf (sysctl.d drop-in differs)",
			},
			calls:  []string{"set net.ipv4.ip_forward=1 (was 0)", fmt.Sprintf("persist %q", dropIn(fwd, "1"))},
			failed: []error{ErrNoSuchKey, driver.ErrTerminal}},
		{name: "read error is a plan error; the key is neither set nor persisted",
			want:      map[string]string{fwd: "1", syn: "1"},
			obs:       observed{values: map[string]string{fwd: "1"}, errs: map[string]error{syn: errors.New("sysctl: reading net.ipv4.tcp_syncookies: permission denied")}, dropIn: dropIn(fwd, "1")},
			planError: "spec.sysctl.net.ipv4.tcp_syncookies: sysctl: reading net.ipv4.tcp_syncookies: permission denied"},
		{name: "partial observation: a key nobody read is not written",
			want:      map[string]string{fwd: "1", syn: "1"},
			obs:       observed{values: map[string]string{syn: "0"}, dropIn: dropIn(syn, "1")},
			changes:   []string{`update sysctl:net.ipv4.tcp_syncookies (net.ipv4.tcp_syncookies is "0", want "1")`},
			calls:     []string{"set net.ipv4.tcp_syncookies=1 (was 0)"},
			planError: "spec.sysctl.net.ipv4.ip_forward: sysctl: net.ipv4.ip_forward was not read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			p, err := plan(rec, tc.want, tc.orig, tc.obs)
			switch {
			case tc.planError == "" && err != nil:
				t.Fatalf("plan error: %v", err)
			case tc.planError != "" && (err == nil || !strings.Contains(err.Error(), tc.planError)):
				t.Fatalf("plan error %v, want one containing %q", err, tc.planError)
			}
			var got []string
			for _, c := range p {
				got = append(got, c.String())
			}
			if !slices.Equal(got, tc.changes) {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.changes, "\n"))
			}
			var failed error
			for _, c := range p {
				if err := c.Apply(context.Background()); err != nil {
					if failed != nil {
						t.Fatalf("two changes failed: %v, %v", failed, err)
					}
					failed = err
				}
			}
			if !slices.Equal(rec.calls, tc.calls) {
				t.Fatalf("applied:\n%s\nwant:\n%s", strings.Join(rec.calls, "\n"), strings.Join(tc.calls, "\n"))
			}
			if (failed != nil) != (len(tc.failed) > 0) {
				t.Fatalf("failed change: %v, want one matching %v", failed, tc.failed)
			}
			for _, target := range tc.failed {
				if !errors.Is(failed, target) {
					t.Errorf("failure %v is not %v", failed, target)
				}
			}
		})
	}
}

// TestPlanFoundAndWant: a repaired value reports what was found and what
// was wanted, which drift events carry.
func TestPlanFoundAndWant(t *testing.T) {
	p, err := plan(&recorder{}, map[string]string{"net.ipv4.ip_forward": "1"}, nil,
		observed{values: map[string]string{"net.ipv4.ip_forward": "0"}, dropIn: render(map[string]string{"net.ipv4.ip_forward": "1"})})
	if err != nil || len(p) != 1 {
		t.Fatalf("plan %v, %v", p, err)
	}
	if p[0].Found != "0" || p[0].Want != "1" {
		t.Fatalf("found %q want %q", p[0].Found, p[0].Want)
	}
}
