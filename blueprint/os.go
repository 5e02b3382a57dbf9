package blueprint

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// KernelModule is a kernel module loaded or blacklisted.
type KernelModule struct {
	Name    string `json:"name"`
	State   string `json:"state,omitempty" doc:"loaded or blacklisted (default loaded)."`
	Options string `json:"options,omitempty" doc:"Module options, as for modprobe.d."`
}

// Firewall is an nftables rule set in a table the agent owns.
type Firewall struct {
	Table  string         `json:"table,omitempty" doc:"nftables table name, starting with alpha (default alpha)."`
	Policy FirewallPolicy `json:"policy,omitempty"`
	Rules  []FirewallRule `json:"rules,omitempty"`
}

// FirewallPolicy holds default verdicts per chain.
type FirewallPolicy struct {
	Input   string `json:"input,omitempty" doc:"accept or drop (default accept)."`
	Forward string `json:"forward,omitempty"`
	Output  string `json:"output,omitempty"`
}

// FirewallRule allows or denies traffic.
type FirewallRule struct {
	Name      string `json:"name,omitempty"`
	Chain     string `json:"chain,omitempty" doc:"input, forward or output (default input)."`
	Action    string `json:"action" doc:"accept, drop or reject."`
	Protocol  string `json:"protocol,omitempty" doc:"tcp, udp or icmp."`
	Port      int    `json:"port,omitempty"`
	Ports     string `json:"ports,omitempty" doc:"Range, e.g. 8000-8100."`
	Source    string `json:"source,omitempty" doc:"CIDR."`
	Interface string `json:"interface,omitempty"`
}

// Network declares named links.
type Network struct {
	Interfaces []Interface `json:"interfaces,omitempty"`
	Routes     []Route     `json:"routes,omitempty"`
}

// Interface is one named link.
type Interface struct {
	Name      string   `json:"name"`
	Up        *bool    `json:"up,omitempty"`
	MTU       int      `json:"mtu,omitempty"`
	Addresses []string `json:"addresses,omitempty" doc:"CIDR addresses."`
}

// Route is a static route.
type Route struct {
	Destination string `json:"destination" doc:"CIDR or default."`
	Gateway     string `json:"gateway,omitempty"`
	Interface   string `json:"interface,omitempty"`
}

// Compliance holds policies checked and, where safe, enforced.
type Compliance struct {
	Policies []Policy `json:"policies,omitempty"`
}

// Policy is one compliance rule.
type Policy struct {
	Name     string   `json:"name"`
	Type     string   `json:"type" doc:"diskEncryption, secureBoot, selinux, apparmor or fileContent."`
	Mode     string   `json:"mode,omitempty" doc:"enforce or audit (default audit)."`
	Mounts   []string `json:"mounts,omitempty" doc:"diskEncryption: mount points that must be on LUKS."`
	State    string   `json:"state,omitempty" doc:"selinux: enforcing/permissive; secureBoot: enabled."`
	Profiles []string `json:"profiles,omitempty" doc:"apparmor: profiles that must be in enforce mode."`
	Path     string   `json:"path,omitempty" doc:"fileContent: the file."`
	Line     string   `json:"line,omitempty" doc:"fileContent: a line that must be present, e.g. PermitRootLogin no."`
}

// Maintenance holds the windows outside which blueprint changes are staged.
type Maintenance struct {
	TimeZone string   `json:"timeZone,omitempty" doc:"IANA zone of the site (default UTC)."`
	Windows  []Window `json:"windows,omitempty"`
}

// Window is a weekly range.
type Window struct {
	Days  []string `json:"days" doc:"mon..sun."`
	Start string   `json:"start" doc:"HH:MM."`
	End   string   `json:"end" doc:"HH:MM; before start means the next day."`
}

var sysctlKeyRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-zA-Z0-9_\-]+)+$`)

// Whether a key exists is only known on the node (it depends on its kernel
// and modules): the sysctl driver reports an unknown key there, naming it.
func (c *checker) sysctl(m map[string]string) {
	for k, v := range m {
		if !sysctlKeyRE.MatchString(k) {
			c.add("spec.sysctl."+k, "%q is not a sysctl key like net.ipv4.ip_forward", k)
		}
		if strings.TrimSpace(v) == "" || strings.ContainsAny(v, "\n\r") {
			c.add("spec.sysctl."+k, "%q is not a value: it must be non-empty and on one line", v)
		}
	}
}

// moduleRE is a module name as modprobe takes it; the first character is
// never '-', so modprobe cannot read the name as one of its own flags.
var moduleRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,54}$`)

// moduleOptionRE is one module parameter, key=value, as in modprobe.d. A
// token that starts with a parameter name cannot be a modprobe flag, and no
// space, quote or # can end the options line in modprobe.d early.
var moduleOptionRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9_-]*=[a-zA-Z0-9_.,:/+=@-]+$`)

func (c *checker) modules(ms []KernelModule) {
	seen := map[string]string{}
	for i, m := range ms {
		p := fmt.Sprintf("spec.kernelModules[%d]", i)
		if m.Name == "" {
			c.add(p+".name", "is required")
		} else if !moduleRE.MatchString(m.Name) {
			c.add(p+".name", "%q is not a module name (letters, digits, _ -; not starting with -)", m.Name)
		}
		if prev, ok := seen[m.Name]; ok {
			c.add(p+".name", "%q is declared twice (also at %s)", m.Name, prev)
		}
		seen[m.Name] = p
		c.oneOf(p+".state", m.State, "loaded", "blacklisted")
		if strings.ContainsAny(m.Options, "\n\r") {
			c.add(p+".options", "%q must be one line of key=value options", m.Options)
		} else {
			for _, tok := range strings.Fields(m.Options) {
				if !moduleOptionRE.MatchString(tok) {
					c.add(p+".options", "%q is not module options: %q is not a key=value parameter like debug=1", m.Options, tok)
					break
				}
			}
		}
		if m.Options != "" && m.State == "blacklisted" {
			c.add(p+".options", "a blacklisted module takes no options")
		}
	}
}

// ifnameRE is a Linux interface name: at most 15 bytes (IFNAMSIZ-1), no
// slash, space or quote.
var ifnameRE = regexp.MustCompile(`^[a-zA-Z0-9_.:@-]{1,15}$`)

func (c *checker) ifname(p, v string) {
	if v == "" {
		c.add(p, "is required")
	} else if !ifnameRE.MatchString(v) {
		c.add(p, "%q is not an interface name (at most 15 of letters, digits, _ . : @ -)", v)
	}
}

// FirewallTablePrefix starts the name of every nftables table Alpha owns.
// Another program's table (firewalld, ufw's, Docker's) can never be named,
// so the agent never replaces or deletes one.
const FirewallTablePrefix = "alpha"

var firewallTableRE = regexp.MustCompile(`^` + FirewallTablePrefix + `[a-zA-Z0-9_-]{0,58}$`)

// CheckFirewallTable says why t cannot be the table of spec.firewall, or
// nil. Validation and the firewall driver both ask it: the driver must
// refuse even a spec that reached it without validation.
func CheckFirewallTable(t string) error {
	switch {
	case !strings.HasPrefix(t, FirewallTablePrefix):
		return fmt.Errorf("%q must start with %q: Alpha manages only its own tables", t, FirewallTablePrefix)
	case !firewallTableRE.MatchString(t):
		return fmt.Errorf("%q is not a table name (%s followed by at most 58 of letters, digits, _ -)", t, FirewallTablePrefix)
	}
	return nil
}

func (c *checker) firewall(f *Firewall) {
	if f == nil {
		return
	}
	if f.Table != "" {
		if err := CheckFirewallTable(f.Table); err != nil {
			c.add("spec.firewall.table", "%v", err)
		}
	}
	c.oneOf("spec.firewall.policy.input", f.Policy.Input, "accept", "drop")
	c.oneOf("spec.firewall.policy.forward", f.Policy.Forward, "accept", "drop")
	c.oneOf("spec.firewall.policy.output", f.Policy.Output, "accept", "drop")
	for i, r := range f.Rules {
		p := fmt.Sprintf("spec.firewall.rules[%d]", i)
		if r.Name != "" {
			c.name(p+".name", r.Name)
		}
		if r.Interface != "" {
			c.ifname(p+".interface", r.Interface)
		}
		c.oneOf(p+".chain", r.Chain, "input", "forward", "output")
		if r.Action == "" {
			c.add(p+".action", "is required")
		}
		c.oneOf(p+".action", r.Action, "accept", "drop", "reject")
		c.oneOf(p+".protocol", r.Protocol, "tcp", "udp", "icmp")
		if r.Port < 0 || r.Port > 65535 {
			c.add(p+".port", "%d is out of range 1-65535", r.Port)
		}
		if (r.Port != 0 || r.Ports != "") && r.Protocol != "tcp" && r.Protocol != "udp" {
			c.add(p+".protocol", "a port needs protocol tcp or udp")
		}
		if r.Port != 0 && r.Ports != "" {
			c.add(p+".ports", "give port or ports, not both")
		}
		if r.Ports != "" {
			lo, hi, ok := strings.Cut(r.Ports, "-")
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
				c.add(p+".ports", "%q is not a port range like 8000-8100", r.Ports)
			}
		}
		c.cidr(p+".source", r.Source)
	}
}

func (c *checker) network(n *Network) {
	if n == nil {
		return
	}
	links := map[string]string{}
	for i, it := range n.Interfaces {
		p := fmt.Sprintf("spec.network.interfaces[%d]", i)
		c.ifname(p+".name", it.Name)
		if prev, ok := links[it.Name]; ok {
			c.add(p+".name", "%q is declared twice (also at %s)", it.Name, prev)
		}
		links[it.Name] = p
		if it.MTU != 0 && (it.MTU < 68 || it.MTU > 65535) {
			c.add(p+".mtu", "%d is out of range 68-65535", it.MTU)
		}
		for j, a := range it.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				c.add(fmt.Sprintf("%s.addresses[%d]", p, j), "%q is not a CIDR address like 10.0.0.2/24", a)
			}
		}
	}
	dsts := map[string]string{}
	for i, r := range n.Routes {
		p := fmt.Sprintf("spec.network.routes[%d]", i)
		if r.Destination != "default" {
			if _, err := netip.ParsePrefix(r.Destination); err != nil {
				c.add(p+".destination", "%q is not a CIDR or default", r.Destination)
			}
		}
		if r.Gateway != "" {
			if _, err := netip.ParseAddr(r.Gateway); err != nil {
				c.add(p+".gateway", "%q is not an address", r.Gateway)
			}
		}
		if r.Interface != "" {
			c.ifname(p+".interface", r.Interface)
		}
		if r.Gateway == "" && r.Interface == "" {
			c.add(p, "a route needs a gateway or an interface")
		}
		if prev, ok := dsts[r.Destination]; ok {
			c.add(p+".destination", "%q is declared twice (also at %s)", r.Destination, prev)
		}
		dsts[r.Destination] = p
	}
}

func (c *checker) compliance(cp *Compliance) {
	if cp == nil {
		return
	}
	names := map[string]string{}
	for i, pol := range cp.Policies {
		p := fmt.Sprintf("spec.compliance.policies[%d]", i)
		c.name(p+".name", pol.Name)
		if prev, ok := names[pol.Name]; ok {
			c.add(p+".name", "%q is declared twice (also at %s)", pol.Name, prev)
		}
		names[pol.Name] = p
		switch pol.Type {
		case "diskEncryption":
			if len(pol.Mounts) == 0 {
				c.add(p+".mounts", "is required for diskEncryption")
			}
			for j, m := range pol.Mounts {
				if m != "/" {
					c.path(fmt.Sprintf("%s.mounts[%d]", p, j), m)
				}
			}
		case "selinux":
			c.oneOf(p+".state", pol.State, "enforcing", "permissive")
		case "secureBoot":
			c.oneOf(p+".state", pol.State, "enabled", "disabled")
		}
		if pol.Type == "" {
			c.add(p+".type", "is required")
		}
		c.oneOf(p+".type", pol.Type, "diskEncryption", "secureBoot", "selinux", "apparmor", "fileContent")
		c.oneOf(p+".mode", pol.Mode, "enforce", "audit")
		if pol.Type == "fileContent" {
			c.path(p+".path", pol.Path)
			if strings.TrimSpace(pol.Line) == "" {
				c.add(p+".line", "is required for fileContent")
			} else if strings.ContainsAny(pol.Line, "\n\r") || strings.HasPrefix(strings.TrimSpace(pol.Line), "#") {
				c.add(p+".line", "%q must be one setting line, not a comment", pol.Line)
			}
		}
	}
}

var clockRE = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$`)

var weekdays = map[string]bool{"mon": true, "tue": true, "wed": true, "thu": true, "fri": true, "sat": true, "sun": true}

func (c *checker) maintenance(m *Maintenance) {
	if m == nil {
		return
	}
	if m.TimeZone != "" {
		if _, err := time.LoadLocation(m.TimeZone); err != nil {
			c.add("spec.maintenance.timeZone", "%q is not a known time zone", m.TimeZone)
		}
	}
	for i, w := range m.Windows {
		p := fmt.Sprintf("spec.maintenance.windows[%d]", i)
		if len(w.Days) == 0 {
			c.add(p+".days", "is empty: the window would never open")
		}
		for j, d := range w.Days {
			if !weekdays[d] {
				c.add(fmt.Sprintf("%s.days[%d]", p, j), "%q is not one of mon, tue, wed, thu, fri, sat, sun", d)
			}
		}
		if !clockRE.MatchString(w.Start) {
			c.add(p+".start", "%q is not a time like 02:00", w.Start)
		}
		if !clockRE.MatchString(w.End) {
			c.add(p+".end", "%q is not a time like 04:00", w.End)
		}
		if w.Start != "" && w.Start == w.End {
			c.add(p+".end", "%q equals start: the window would never open", w.End)
		}
	}
	if len(m.Windows) > 0 && !opens(m.Windows) {
		c.add("spec.maintenance.windows", "no window names a valid day: changes would be staged forever")
	}
}

// opens reports whether at least one window has a valid day and a span.
func opens(ws []Window) bool {
	for _, w := range ws {
		if w.Start == w.End || !clockRE.MatchString(w.Start) || !clockRE.MatchString(w.End) {
			continue
		}
		for _, d := range w.Days {
			if weekdays[d] {
				return true
			}
		}
	}
	return false
}
