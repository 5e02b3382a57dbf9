package blueprint

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Validate checks a blueprint built in Go (Parse validates what it decodes).
func (b *Blueprint) Validate() error {
	if errs := b.validate(nil); len(errs) > 0 {
		return errs
	}
	return nil
}

// checker collects every problem with its line.
type checker struct {
	errs  Errors
	lines map[string]int
}

func (c *checker) add(p, format string, args ...any) {
	c.errs = append(c.errs, FieldError{Path: p, Line: c.lines[p], Msg: fmt.Sprintf(format, args...)})
}

func (b *Blueprint) validate(lines map[string]int) Errors {
	c := &checker{lines: lines}
	if b.APIVersion != APIVersion {
		c.add("apiVersion", "%q is not supported; use %q", b.APIVersion, APIVersion)
	}
	if b.Kind != Kind {
		c.add("kind", "%q is not supported; use %q", b.Kind, Kind)
	}
	if b.Metadata.Name == "" {
		c.add("metadata.name", "is required")
	}
	s := &b.Spec
	ids := map[string]string{} // resource id -> path, for dependsOn and duplicates
	c.files(s.Files, ids)
	c.containers(s.Containers, ids)
	c.units(s.Units, ids)
	c.sysctl(s.Sysctl)
	c.modules(s.KernelModules)
	c.firewall(s.Firewall)
	c.network(s.Network)
	c.compliance(s.Compliance)
	c.cloud(s.Cloud, ids)
	c.telemetry(s.Telemetry)
	c.remediation(s.Remediation, ids)
	c.maintenance(s.Maintenance)
	if s.Health != nil {
		c.refs("spec.health.dependsOn", s.Health.DependsOn, ids)
	}
	if id := cycle(b.Dependencies()); id != "" {
		c.add("spec", "dependsOn forms a cycle through %q", id)
	}
	for i, f := range s.Files {
		c.refs(fmt.Sprintf("spec.files[%d].dependsOn", i), f.DependsOn, ids)
	}
	for i, ct := range s.Containers {
		c.refs(fmt.Sprintf("spec.containers[%d].dependsOn", i), ct.DependsOn, ids)
	}
	for i, u := range s.Units {
		c.refs(fmt.Sprintf("spec.units[%d].dependsOn", i), u.DependsOn, ids)
	}
	return c.errs
}

// ResourceID names a resource across sections: "file:/etc/x", "container:web",
// "unit:meter.service", "cloud:logs". dependsOn and health use these ids.
func ResourceID(kind, name string) string { return kind + ":" + name }

func (c *checker) unique(ids map[string]string, id, p string) {
	if prev, ok := ids[id]; ok {
		c.add(p, "%q is declared twice (also at %s)", id, prev)
		return
	}
	ids[id] = p
}

func (c *checker) refs(p string, refs []string, ids map[string]string) {
	for i, r := range refs {
		if _, ok := ids[r]; !ok {
			c.add(fmt.Sprintf("%s[%d]", p, i), "%q names no resource of this blueprint", r)
		}
	}
}

// CleanPath reports whether p is an absolute, clean path that cannot climb out
// of the agent's root.
func CleanPath(p string) bool {
	return strings.HasPrefix(p, "/") && path.Clean(p) == p && !strings.Contains(p, "/../") && p != "/"
}

var modeRE = regexp.MustCompile(`^0?[0-7]{3,4}$`)

// ParseMode reads an octal mode like "0644"; empty means def.
func ParseMode(s string, def uint32) (uint32, error) {
	if s == "" {
		return def, nil
	}
	if !modeRE.MatchString(s) {
		return 0, fmt.Errorf("%q is not an octal mode like \"0644\"", s)
	}
	v, err := strconv.ParseUint(s, 8, 32)
	return uint32(v), err
}

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.@-]{0,127}$`)

func (c *checker) name(p, v string) {
	if v == "" {
		c.add(p, "is required")
	} else if !nameRE.MatchString(v) {
		c.add(p, "%q is not a valid name (letters, digits, . _ @ -)", v)
	}
}

func (c *checker) oneOf(p, v string, allowed ...string) {
	if v == "" {
		return
	}
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	c.add(p, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func (c *checker) path(p, v string) {
	switch {
	case v == "":
		c.add(p, "is required")
	case !CleanPath(v):
		c.add(p, "%q must be an absolute, clean path inside the root (no .., no trailing /)", v)
	}
}

func (c *checker) files(files []File, ids map[string]string) {
	for i, f := range files {
		p := fmt.Sprintf("spec.files[%d]", i)
		c.path(p+".path", f.Path)
		if _, err := ParseMode(f.Mode, 0o644); err != nil {
			c.add(p+".mode", "%v", err)
		}
		if f.Path != "" {
			c.unique(ids, ResourceID("file", f.Path), p+".path")
		}
	}
}

func (c *checker) artifact(p string, a *Artifact) {
	if a == nil {
		return
	}
	if a.Name == "" {
		c.add(p+".name", "is required")
	}
	if len(a.SHA256) != 64 || strings.Trim(strings.ToLower(a.SHA256), "0123456789abcdef") != "" {
		c.add(p+".sha256", "%q is not a hex sha256 (64 characters)", a.SHA256)
	}
}

func (c *checker) containers(cs []Container, ids map[string]string) {
	for i, ct := range cs {
		p := fmt.Sprintf("spec.containers[%d]", i)
		c.name(p+".name", ct.Name)
		if ct.Image == "" {
			c.add(p+".image", "is required")
		}
		c.artifact(p+".artifact", ct.Artifact)
		c.oneOf(p+".network", ct.Network, "none", "host")
		c.oneOf(p+".restart", ct.Restart, "no", "on-failure", "always")
		if ct.CPUs < 0 {
			c.add(p+".cpus", "%v must not be negative", ct.CPUs)
		}
		for j, m := range ct.Mounts {
			c.path(fmt.Sprintf("%s.mounts[%d].source", p, j), m.Source)
			c.path(fmt.Sprintf("%s.mounts[%d].target", p, j), m.Target)
		}
		for j, dev := range ct.Devices {
			if !strings.HasPrefix(dev, "/dev/") || !CleanPath(dev) {
				c.add(fmt.Sprintf("%s.devices[%d]", p, j), "%q is not a device path under /dev", dev)
			}
		}
		if ct.Name != "" {
			c.unique(ids, ResourceID("container", ct.Name), p+".name")
		}
	}
}

func (c *checker) units(us []Unit, ids map[string]string) {
	for i, u := range us {
		p := fmt.Sprintf("spec.units[%d]", i)
		c.name(p+".name", u.Name)
		if u.Name != "" && !strings.Contains(u.Name, ".") {
			c.add(p+".name", "%q needs a unit suffix such as .service", u.Name)
		}
		c.oneOf(p+".state", u.State, "started", "stopped")
		if e := u.Executable; e != nil {
			c.path(p+".executable.path", e.Path)
			if e.Artifact == nil {
				c.add(p+".executable.artifact", "is required")
			}
			c.artifact(p+".executable.artifact", e.Artifact)
			if _, err := ParseMode(e.Mode, 0o755); err != nil {
				c.add(p+".executable.mode", "%v", err)
			}
		}
		if u.Name != "" {
			c.unique(ids, ResourceID("unit", u.Name), p+".name")
		}
	}
}

var sysctlKeyRE = regexp.MustCompile(`^[a-z0-9_]+(\.[a-zA-Z0-9_\-]+)+$`)

func (c *checker) sysctl(m map[string]string) {
	for k := range m {
		if !sysctlKeyRE.MatchString(k) {
			c.add("spec.sysctl."+k, "%q is not a sysctl key like net.ipv4.ip_forward", k)
		}
	}
}

func (c *checker) modules(ms []KernelModule) {
	for i, m := range ms {
		p := fmt.Sprintf("spec.kernelModules[%d]", i)
		c.name(p+".name", m.Name)
		c.oneOf(p+".state", m.State, "loaded", "blacklisted")
	}
}

func (c *checker) cidr(p, v string) {
	if v == "" {
		return
	}
	if _, err := netip.ParsePrefix(v); err != nil {
		if _, err2 := netip.ParseAddr(v); err2 != nil {
			c.add(p, "%q is not an address or CIDR", v)
		}
	}
}

func (c *checker) firewall(f *Firewall) {
	if f == nil {
		return
	}
	if f.Table != "" {
		c.name("spec.firewall.table", f.Table)
	}
	c.oneOf("spec.firewall.policy.input", f.Policy.Input, "accept", "drop")
	c.oneOf("spec.firewall.policy.forward", f.Policy.Forward, "accept", "drop")
	c.oneOf("spec.firewall.policy.output", f.Policy.Output, "accept", "drop")
	for i, r := range f.Rules {
		p := fmt.Sprintf("spec.firewall.rules[%d]", i)
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
	for i, it := range n.Interfaces {
		p := fmt.Sprintf("spec.network.interfaces[%d]", i)
		c.name(p+".name", it.Name)
		if it.MTU != 0 && (it.MTU < 68 || it.MTU > 65535) {
			c.add(p+".mtu", "%d is out of range 68-65535", it.MTU)
		}
		for j, a := range it.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				c.add(fmt.Sprintf("%s.addresses[%d]", p, j), "%q is not a CIDR address like 10.0.0.2/24", a)
			}
		}
	}
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
	}
}

func (c *checker) compliance(cp *Compliance) {
	if cp == nil {
		return
	}
	for i, pol := range cp.Policies {
		p := fmt.Sprintf("spec.compliance.policies[%d]", i)
		c.name(p+".name", pol.Name)
		if pol.Type == "" {
			c.add(p+".type", "is required")
		}
		c.oneOf(p+".type", pol.Type, "diskEncryption", "secureBoot", "selinux", "apparmor", "fileContent")
		c.oneOf(p+".mode", pol.Mode, "enforce", "audit")
		if pol.Type == "fileContent" {
			c.path(p+".path", pol.Path)
			if pol.Line == "" {
				c.add(p+".line", "is required for fileContent")
			}
		}
	}
}

func (c *checker) cloud(cs []CloudConfig, ids map[string]string) {
	for i, cc := range cs {
		p := fmt.Sprintf("spec.cloud[%d]", i)
		c.name(p+".name", cc.Name)
		if (cc.Main == "") == (cc.Module == nil) {
			c.add(p, "needs exactly one of main or module")
		}
		c.artifact(p+".module", cc.Module)
		c.oneOf(p+".drift", cc.Drift, "repair", "report")
		if cc.Name != "" {
			c.unique(ids, ResourceID("cloud", cc.Name), p+".name")
		}
	}
}

func (c *checker) telemetry(t *Telemetry) {
	if t == nil {
		return
	}
	if t.Retention.MaxBytes < 0 {
		c.add("spec.telemetry.retention.maxBytes", "%d must not be negative", t.Retention.MaxBytes)
	}
	for i, col := range t.Collectors {
		p := fmt.Sprintf("spec.telemetry.collectors[%d]", i)
		c.oneOf(p+".name", col.Name, "host", "sensors", "units", "containers", "link", "agent")
		if col.Interval.Duration < 0 {
			c.add(p+".interval", "%s must not be negative", col.Interval)
		}
	}
	for i, s := range t.Sensors {
		p := fmt.Sprintf("spec.telemetry.sensors[%d]", i)
		if s.Name == "" {
			c.add(p+".name", "is required")
		}
		if s.Min != nil && s.Max != nil && *s.Min > *s.Max {
			c.add(p, "min %v is above max %v", *s.Min, *s.Max)
		}
	}
}

func (c *checker) remediation(rs []Remediation, ids map[string]string) {
	for i, r := range rs {
		p := fmt.Sprintf("spec.remediation[%d]", i)
		c.name(p+".name", r.Name)
		if r.When.Signal == "" {
			c.add(p+".when.signal", "is required")
		}
		if (r.When.Above == nil) == (r.When.Below == nil) {
			c.add(p+".when", "needs exactly one of above or below")
		}
		if r.Action.Type == "" {
			c.add(p+".action.type", "is required")
		}
		c.oneOf(p+".action.type", r.Action.Type, "alert", "restart", "stop", "exec")
		switch r.Action.Type {
		case "restart", "stop":
			if _, ok := ids[r.Action.Target]; !ok {
				c.add(p+".action.target", "%q names no workload of this blueprint", r.Action.Target)
			}
		case "exec":
			if len(r.Action.Command) == 0 {
				c.add(p+".action.command", "is required for exec")
			}
		}
		if r.Budget != nil && (r.Budget.Max < 1 || r.Budget.Period.Duration <= 0) {
			c.add(p+".budget", "needs max >= 1 and a positive period")
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
}
