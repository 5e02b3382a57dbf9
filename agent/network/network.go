// Package network is the agent driver for spec.network: state, MTU and
// addresses of named links, and static routes, put back when changed by hand.
// It never creates or deletes links: those belong to the hardware or to
// whatever made them.
package network

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
)

// Proto is the routing protocol number the agent marks its routes with, so
// it can tell them from routes the kernel, DHCP or people added.
const Proto = "161"

// ErrNoLink means a link named in the blueprint does not exist on the node.
var ErrNoLink = errors.New("no such link")

// Driver manages spec.network. Plan may be called any number of times; each
// change is idempotent (ip ... replace, deletes of what is there).
type Driver struct {
	env driver.Env
	run oscmd.Runner
	now func() time.Time

	mu sync.Mutex
	// noRoutesAt is when the driver last saw none of its own routes while
	// none were wanted (zero: unknown). Until the route monitor reports
	// anything or routesRecheck passes, a blueprint without routes plans
	// without running ip: two fork/execs per pass made the network driver
	// the slowest part of every reconcile on nodes that never use it.
	noRoutesAt time.Time
}

// routesRecheck bounds how long "none of ours" is trusted without looking,
// for changes the monitor missed (while it restarts).
const routesRecheck = 5 * time.Minute

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Watcher = (*Driver)(nil)
)

// New builds the driver; run is how ip is invoked (empty prefix in
// production, a network namespace in tests).
func New(env driver.Env, run oscmd.Runner) *Driver {
	if env.Log == nil {
		env.Log = slog.Default()
	}
	return &Driver{env: env, run: run, now: time.Now}
}

// Name is the blueprint section.
func (d *Driver) Name() string { return "network" }

// Link is a link as observed.
type Link struct {
	Name  string
	Up    bool
	MTU   int
	Addrs []string // global-scope CIDR addresses, sorted
}

// Route is a route as observed or wanted, normalized.
type Route struct {
	Dst, Gateway, Dev string
}

func (r Route) String() string {
	s := r.Dst
	if r.Gateway != "" {
		s += " via " + r.Gateway
	}
	if r.Dev != "" {
		s += " dev " + r.Dev
	}
	return s
}

// observeLink reads one link; found is false when it does not exist.
func (d *Driver) observeLink(ctx context.Context, name string) (Link, bool, error) {
	out, err := d.run.Run(ctx, nil, "ip", "-j", "addr", "show", "dev", name)
	if err != nil {
		var ee *oscmd.Error
		if errors.As(err, &ee) && strings.Contains(ee.Stderr, "does not exist") {
			return Link{}, false, nil
		}
		return Link{}, false, err
	}
	var links []struct {
		Name     string   `json:"ifname"`
		MTU      int      `json:"mtu"`
		Flags    []string `json:"flags"`
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		return Link{}, false, fmt.Errorf("network: reading ip -j addr for %s: %v", name, err)
	}
	l := links[0]
	obs := Link{Name: l.Name, MTU: l.MTU, Up: slices.Contains(l.Flags, "UP")}
	for _, a := range l.AddrInfo {
		if a.Scope == "global" {
			obs.Addrs = append(obs.Addrs, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
		}
	}
	slices.Sort(obs.Addrs)
	return obs, true, nil
}

// observeRoutes lists the routes carrying the agent's protocol mark.
func (d *Driver) observeRoutes(ctx context.Context) ([]Route, error) {
	var all []Route
	for _, fam := range []string{"-4", "-6"} {
		out, err := d.run.Run(ctx, nil, "ip", "-j", fam, "route", "show", "proto", Proto)
		if err != nil {
			return nil, fmt.Errorf("network: listing routes: %w", err)
		}
		var rs []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
			Dev     string `json:"dev"`
		}
		if err := json.Unmarshal(out, &rs); err != nil {
			return nil, fmt.Errorf("network: reading ip -j route: %w", err)
		}
		for _, r := range rs {
			all = append(all, Route{Dst: normDst(r.Dst), Gateway: r.Gateway, Dev: r.Dev})
		}
	}
	return all, nil
}

// normDst writes destinations the way ip prints them: "default", and
// host routes without their /32 or /128.
func normDst(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return s
	}
	p = p.Masked()
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func normAddr(s string) string {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return s
	}
	return p.String()
}

// Plan compares every named link and the agent's routes with the blueprint.
// A missing link is a change that fails with ErrNoLink, for that link only;
// the rest still applies.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	n := bp.Spec.Network
	if n == nil {
		n = &blueprint.Network{}
	}
	var plan driver.Plan
	var problems []error
	for i, it := range n.Interfaces {
		obs, ok, err := d.observeLink(ctx, it.Name)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		if !ok {
			// A failing change rather than a Plan error, so the engine
			// still applies the rest and marks this link failed.
			err := fmt.Errorf("spec.network.interfaces[%d].name: %w: %q", i, ErrNoLink, it.Name)
			plan = append(plan, driver.NewChange(linkID(it.Name), driver.Update, err.Error(), func(context.Context) error { return err }))
			continue
		}
		plan = append(plan, diffLink(d, it, obs)...)
	}
	if len(n.Routes) == 0 && d.knownNoRoutes() {
		return plan, errors.Join(problems...)
	}
	obs, err := d.observeRoutes(ctx)
	if err != nil {
		return plan, errors.Join(append(problems, err)...)
	}
	d.mu.Lock()
	d.noRoutesAt = time.Time{}
	if len(n.Routes) == 0 && len(obs) == 0 {
		d.noRoutesAt = d.now()
	}
	d.mu.Unlock()
	plan = append(plan, diffRoutes(d, n.Routes, obs)...)
	return plan, errors.Join(problems...)
}

func (d *Driver) knownNoRoutes() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.noRoutesAt.IsZero() && d.now().Sub(d.noRoutesAt) < routesRecheck
}

// forgetRoutes makes the next Plan look at the routes again.
func (d *Driver) forgetRoutes() {
	d.mu.Lock()
	d.noRoutesAt = time.Time{}
	d.mu.Unlock()
}

func linkID(name string) string { return blueprint.ResourceID("interface", name) }

// diffLink is the pure comparison of one link.
func diffLink(d *Driver, it blueprint.Interface, obs Link) driver.Plan {
	var plan driver.Plan
	id := linkID(it.Name)
	add := func(detail, found, want string, args ...string) {
		c := driver.NewChange(id, driver.Update, detail, func(ctx context.Context) error {
			_, err := d.run.Run(ctx, nil, "ip", args...)
			return err
		})
		c.Found, c.Want = found, want
		plan = append(plan, c)
	}
	if it.MTU != 0 && obs.MTU != it.MTU {
		add(fmt.Sprintf("mtu %d, want %d", obs.MTU, it.MTU), strconv.Itoa(obs.MTU), strconv.Itoa(it.MTU),
			"link", "set", "dev", it.Name, "mtu", strconv.Itoa(it.MTU))
	}
	if it.Addresses != nil {
		want := map[string]bool{}
		for _, a := range it.Addresses {
			want[normAddr(a)] = true
		}
		have := map[string]bool{}
		for _, a := range obs.Addrs {
			have[a] = true
			if !want[a] {
				add("address "+a+" not in the blueprint", a, "", "addr", "del", a, "dev", it.Name)
			}
		}
		for _, a := range it.Addresses {
			if a = normAddr(a); !have[a] {
				add("address "+a+" missing", "", a, "addr", "replace", a, "dev", it.Name)
			}
		}
	}
	if it.Up != nil && obs.Up != *it.Up {
		state := map[bool]string{true: "up", false: "down"}
		add(fmt.Sprintf("link %s, want %s", state[obs.Up], state[*it.Up]), state[obs.Up], state[*it.Up],
			"link", "set", "dev", it.Name, state[*it.Up])
	}
	return plan
}

// diffRoutes is the pure comparison of the agent's routes.
func diffRoutes(d *Driver, want []blueprint.Route, obs []Route) driver.Plan {
	var plan driver.Plan
	wanted := map[string]bool{}
	for _, w := range want {
		r := Route{Dst: normDst(w.Destination), Gateway: w.Gateway, Dev: w.Interface}
		wanted[r.Dst] = true
		var found *Route
		for i := range obs {
			if obs[i].Dst == r.Dst {
				found = &obs[i]
			}
		}
		if found != nil && found.Gateway == r.Gateway && (r.Dev == "" || found.Dev == r.Dev) {
			continue
		}
		op, detail, was := driver.Create, "route "+r.String()+" missing", ""
		if found != nil {
			op, detail, was = driver.Update, "route is "+found.String()+", want "+r.String(), found.String()
		}
		args := []string{"route", "replace", r.Dst}
		if r.Gateway != "" {
			args = append(args, "via", r.Gateway)
		}
		if r.Dev != "" {
			args = append(args, "dev", r.Dev)
		}
		args = append(args, "proto", Proto)
		c := driver.NewChange(blueprint.ResourceID("route", r.Dst), op, detail, func(ctx context.Context) error {
			_, err := d.run.Run(ctx, nil, "ip", args...)
			return err
		})
		c.Found, c.Want = was, r.String()
		plan = append(plan, c)
	}
	for _, o := range obs {
		if wanted[o.Dst] {
			continue
		}
		o := o
		plan = append(plan, driver.NewChange(blueprint.ResourceID("route", o.Dst), driver.Delete, "route "+o.String()+" left the blueprint", func(ctx context.Context) error {
			_, err := d.run.Run(ctx, nil, "ip", "route", "del", o.Dst, "proto", Proto)
			return err
		}))
	}
	return plan
}

// Watch follows ip monitor (links, addresses, routes) and asks for a
// reconcile on every event; if the monitor dies it restarts after a wait
// growing from 1 s to 30 s.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	return d.run.Monitor(ctx, d.env.Log, func(reason string) {
		d.forgetRoutes()
		notify(reason)
	}, "ip", "monitor", "link", "address", "route")
}
