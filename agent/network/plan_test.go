package network

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/blueprint"
)

// TestPlan runs the pure comparison on made-up observations: no root, no
// namespace, no ip binary. Applying the changes records the ip command
// lines they would run.
func TestPlan(t *testing.T) {
	up, down := true, false
	a0 := func(mtu int, isUp bool, addrs ...string) linkState {
		return linkState{link: Link{Name: "a0", Up: isUp, MTU: mtu, Addrs: addrs}, found: true}
	}
	links := func(kv ...any) map[string]linkState {
		m := map[string]linkState{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1].(linkState)
		}
		return m
	}
	wantA0 := blueprint.Interface{Name: "a0", Up: &up, MTU: 1400, Addresses: []string{"10.9.0.2/24", "fd00:0::2/64"}}
	routes := []blueprint.Route{{Destination: "10.10.0.0/16", Gateway: "10.9.0.1"}, {Destination: "192.0.2.7/32", Interface: "a0"}}
	ours := []Route{{Dst: "10.10.0.0/16", Gateway: "10.9.0.1", Dev: "a0"}, {Dst: "192.0.2.7", Dev: "a0"}}
	for _, tc := range []struct {
		name    string
		n       blueprint.Network
		obs     observed
		changes []string // "op id (detail) found->want", in order
		calls   []string // ip command lines the changes run, in order
		failed  string   // the error of the one change that fails, if any
		planErr string   // substring of Plan's error; "" for none
	}{
		{name: "no network section, routes not looked at"},
		{name: "no network section, none of ours", obs: observed{listed: true}},
		{name: "nothing to do",
			n:   blueprint.Network{Interfaces: []blueprint.Interface{wantA0}, Routes: routes},
			obs: observed{links: links("a0", a0(1400, true, "10.9.0.2/24", "fd00::2/64")), listed: true, routes: ours}},
		{name: "add: link settings first, then routes",
			n:   blueprint.Network{Interfaces: []blueprint.Interface{wantA0}, Routes: routes},
			obs: observed{links: links("a0", a0(1500, false)), listed: true},
			changes: []string{
				"update interface:a0 (mtu 1500, want 1400) 1500->1400",
				"update interface:a0 (address 10.9.0.2/24 missing) ->10.9.0.2/24",
				"update interface:a0 (address fd00::2/64 missing) ->fd00::2/64",
				"update interface:a0 (link down, want up) down->up",
				"create route:10.10.0.0/16 (route 10.10.0.0/16 via 10.9.0.1 missing) ->10.10.0.0/16 via 10.9.0.1",
				"create route:192.0.2.7 (route 192.0.2.7 dev a0 missing) ->192.0.2.7 dev a0",
			},
			calls: []string{
				"link set dev a0 mtu 1400",
				"addr replace 10.9.0.2/24 dev a0",
				"addr replace fd00::2/64 dev a0",
				"link set dev a0 up",
				"route replace 10.10.0.0/16 via 10.9.0.1 proto 161",
				"route replace 192.0.2.7 dev a0 proto 161",
			}},
		{name: "change: stray address removed before the missing one is added, route moved",
			n: blueprint.Network{Interfaces: []blueprint.Interface{{Name: "a0", Up: &down, Addresses: []string{"10.9.0.2/24"}}},
				Routes: []blueprint.Route{{Destination: "10.10.0.0/16", Gateway: "10.9.0.254"}}},
			obs: observed{links: links("a0", a0(1500, true, "10.99.0.1/24")), listed: true, routes: ours[:1]},
			changes: []string{
				"update interface:a0 (address 10.99.0.1/24 not in the blueprint) 10.99.0.1/24->",
				"update interface:a0 (address 10.9.0.2/24 missing) ->10.9.0.2/24",
				"update interface:a0 (link up, want down) up->down",
				"update route:10.10.0.0/16 (route is 10.10.0.0/16 via 10.9.0.1 dev a0, want 10.10.0.0/16 via 10.9.0.254) 10.10.0.0/16 via 10.9.0.1 dev a0->10.10.0.0/16 via 10.9.0.254",
			},
			calls: []string{
				"addr del 10.99.0.1/24 dev a0",
				"addr replace 10.9.0.2/24 dev a0",
				"link set dev a0 down",
				"route replace 10.10.0.0/16 via 10.9.0.254 proto 161",
			}},
		{name: "unset fields are left alone",
			n:   blueprint.Network{Interfaces: []blueprint.Interface{{Name: "a0"}}},
			obs: observed{links: links("a0", a0(9000, false, "10.99.0.1/24")), listed: true}},
		{name: "an empty address list removes every global address",
			n:       blueprint.Network{Interfaces: []blueprint.Interface{{Name: "a0", Addresses: []string{}}}},
			obs:     observed{links: links("a0", a0(1500, true, "10.99.0.1/24")), listed: true},
			changes: []string{"update interface:a0 (address 10.99.0.1/24 not in the blueprint) 10.99.0.1/24->"},
			calls:   []string{"addr del 10.99.0.1/24 dev a0"}},
		{name: "remove what Alpha owns and only that",
			// Only routes with the agent's mark are observed; a link that
			// left the blueprint is neither changed nor deleted.
			obs: observed{links: links("a0", a0(1400, true)), listed: true, routes: ours},
			changes: []string{
				"delete route:10.10.0.0/16 (route 10.10.0.0/16 via 10.9.0.1 dev a0 left the blueprint) ->",
				"delete route:192.0.2.7 (route 192.0.2.7 dev a0 left the blueprint) ->",
			},
			calls: []string{"route del 10.10.0.0/16 proto 161", "route del 192.0.2.7 proto 161"}},
		{name: "missing link fails alone",
			n:       blueprint.Network{Interfaces: []blueprint.Interface{{Name: "nope0", MTU: 1400}, {Name: "a0", MTU: 1300}}},
			obs:     observed{links: links("nope0", linkState{}, "a0", a0(1500, true)), listed: true},
			changes: []string{`update interface:nope0 (spec.network.interfaces[0].name: no such link: "nope0") ->`, "update interface:a0 (mtu 1500, want 1300) 1500->1300"},
			calls:   []string{"link set dev a0 mtu 1300"},
			failed:  `spec.network.interfaces[0].name: no such link: "nope0"`},
		{name: "unreadable link is a plan error; the rest is planned",
			n:       blueprint.Network{Interfaces: []blueprint.Interface{{Name: "b0", MTU: 1400}, {Name: "a0", MTU: 1300}}},
			obs:     observed{links: links("b0", linkState{err: errors.New("network: reading ip -j addr for b0: bad json")}, "a0", a0(1500, true)), listed: true},
			changes: []string{"update interface:a0 (mtu 1500, want 1300) 1500->1300"},
			calls:   []string{"link set dev a0 mtu 1300"},
			planErr: "network: reading ip -j addr for b0: bad json"},
		{name: "partial observation: a link nobody read is not changed",
			n:       blueprint.Network{Interfaces: []blueprint.Interface{{Name: "a0", MTU: 1300}}},
			obs:     observed{listed: true},
			planErr: "network: link a0 was not read"},
		{name: "routes unlisted: links still planned, no route touched",
			n:       blueprint.Network{Interfaces: []blueprint.Interface{{Name: "a0", MTU: 1300}}, Routes: routes},
			obs:     observed{links: links("a0", a0(1500, true)), routesErr: errors.New("network: listing routes: exit status 1")},
			changes: []string{"update interface:a0 (mtu 1500, want 1300) 1500->1300"},
			calls:   []string{"link set dev a0 mtu 1300"},
			planErr: "network: listing routes: exit status 1"},
		{name: "partial observation: routes wanted but not looked at",
			n:       blueprint.Network{Routes: routes},
			planErr: "network: routes were not listed"},
		{name: "a route without an interface matches whatever device it uses",
			n:   blueprint.Network{Routes: []blueprint.Route{{Destination: "default", Gateway: "10.9.0.1"}}},
			obs: observed{listed: true, routes: []Route{{Dst: "default", Gateway: "10.9.0.1", Dev: "eth7"}}}},
		{name: "0.0.0.0/0 is the default route ip lists: nothing to repair",
			n:   blueprint.Network{Routes: []blueprint.Route{{Destination: "0.0.0.0/0", Gateway: "10.9.0.1"}}},
			obs: observed{listed: true, routes: []Route{{Dst: "default", Gateway: "10.9.0.1", Dev: "eth7"}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var calls []string
			ip := func(_ context.Context, args ...string) error {
				calls = append(calls, strings.Join(args, " "))
				return nil
			}
			p, err := plan(ip, &tc.n, tc.obs)
			switch {
			case tc.planErr == "" && err != nil:
				t.Fatalf("plan error: %v", err)
			case tc.planErr != "" && (err == nil || !strings.Contains(err.Error(), tc.planErr)):
				t.Fatalf("plan error %v, want one containing %q", err, tc.planErr)
			}
			var got []string
			var failed error
			for _, c := range p {
				got = append(got, fmt.Sprintf("%s %s->%s", c, c.Found, c.Want))
				if err := c.Apply(context.Background()); err != nil {
					if failed != nil {
						t.Fatalf("two changes failed: %v, %v", failed, err)
					}
					failed = err
				}
			}
			if !slices.Equal(got, tc.changes) {
				t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.changes, "\n"))
			}
			if !slices.Equal(calls, tc.calls) {
				t.Fatalf("ip ran:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(tc.calls, "\n"))
			}
			switch {
			case tc.failed == "" && failed != nil:
				t.Fatalf("change failed: %v", failed)
			case tc.failed != "" && (!errors.Is(failed, ErrNoLink) || failed.Error() != tc.failed):
				t.Fatalf("failed change: %v, want ErrNoLink %q", failed, tc.failed)
			}
		})
	}
}
