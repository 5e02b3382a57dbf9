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
	if p.Bits() == 0 {
		return "default" // how ip -j lists 0.0.0.0/0 and ::/0
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

// Plan observes every named link and the agent's routes, then leaves the
// decision to plan.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	n := bp.Spec.Network
	if n == nil {
		n = &blueprint.Network{}
	}
	return plan(d.ip, n, d.observe(ctx, n))
}

// observed is what the node has: each link the blueprint names and the
// routes carrying the agent's mark.
type observed struct {
	links map[string]linkState // by name
	// listed is false when the routes were not looked at: none are wanted
	// and the driver knows it has none (see noRoutesAt), or listing them
	// failed (routesErr).
	listed    bool
	routes    []Route
	routesErr error
}

// linkState is one named link: found, missing, or unreadable (err).
type linkState struct {
	link  Link
	found bool
	err   error
}

// observe reads the links n names and, unless known to be none of ours
// while none are wanted, the agent's routes. It changes nothing on the node.
func (d *Driver) observe(ctx context.Context, n *blueprint.Network) observed {
	obs := observed{links: map[string]linkState{}}
	for _, it := range n.Interfaces {
		l, ok, err := d.observeLink(ctx, it.Name)
		obs.links[it.Name] = linkState{link: l, found: ok, err: err}
	}
	if len(n.Routes) == 0 && d.knownNoRoutes() {
		return obs
	}
	obs.routes, obs.routesErr = d.observeRoutes(ctx)
	if obs.routesErr != nil {
		return obs
	}
	obs.listed = true
	d.mu.Lock()
	d.noRoutesAt = time.Time{}
	if len(n.Routes) == 0 && len(obs.routes) == 0 {
		d.noRoutesAt = d.now()
	}
	d.mu.Unlock()
	return obs
}

// runIP runs ip with args. The changes of a plan touch the node only
// through it: Driver.ip in production, a recorder in the tests of plan.
type runIP func(ctx context.Context, args ...string) error

func (d *Driver) ip(ctx context.Context, args ...string) error {
	_, err := d.run.Run(ctx, nil, "ip", args...)
	return err
}

// plan compares every named link and the agent's routes with n. It does no
// I/O, so unit tests call it with made-up observations.
//
// Link changes come first, in blueprint order, so an address a route's
// gateway needs is there before the route. A missing link is a change that
// fails with ErrNoLink, for that link only; the rest still applies. A link
// or route listing that could not be read is a Plan error, and nothing is
// planned for what it would have shown.
func plan(ip runIP, n *blueprint.Network, obs observed) (driver.Plan, error) {
	var p driver.Plan
	var problems []error
	for i, it := range n.Interfaces {
		l, ok := obs.links[it.Name]
		switch {
		case !ok:
			problems = append(problems, fmt.Errorf("network: link %s was not read", it.Name))
		case l.err != nil:
			problems = append(problems, l.err)
		case !l.found:
			// A failing change rather than a Plan error, so the engine
			// still applies the rest and marks this link failed.
			err := fmt.Errorf("spec.network.interfaces[%d].name: %w: %q", i, ErrNoLink, it.Name)
			p = append(p, driver.NewChange(linkID(it.Name), driver.Update, err.Error(), func(context.Context) error { return err }))
		default:
			p = append(p, diffLink(ip, it, l.link)...)
		}
	}
	switch {
	case obs.routesErr != nil:
		problems = append(problems, obs.routesErr)
	case !obs.listed && len(n.Routes) > 0:
		// Creating every wanted route blind could not remove strays.
		problems = append(problems, errors.New("network: routes were not listed"))
	default:
		p = append(p, diffRoutes(ip, n.Routes, obs.routes)...)
	}
	return p, errors.Join(problems...)
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
func diffLink(ip runIP, it blueprint.Interface, obs Link) driver.Plan {
	var p driver.Plan
	id := linkID(it.Name)
	add := func(detail, found, want string, args ...string) {
		c := driver.NewChange(id, driver.Update, detail, func(ctx context.Context) error {
			return ip(ctx, args...)
		})
		c.Found, c.Want = found, want
		p = append(p, c)
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
	return p
}

// diffRoutes is the pure comparison of the agent's routes.
func diffRoutes(ip runIP, want []blueprint.Route, obs []Route) driver.Plan {
	var p driver.Plan
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
			return ip(ctx, args...)
		})
		c.Found, c.Want = was, r.String()
		p = append(p, c)
	}
	for _, o := range obs {
		if wanted[o.Dst] {
			continue
		}
		o := o
		p = append(p, driver.NewChange(blueprint.ResourceID("route", o.Dst), driver.Delete, "route "+o.String()+" left the blueprint", func(ctx context.Context) error {
			return ip(ctx, "route", "del", o.Dst, "proto", Proto)
		}))
	}
	return p
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
