package blueprint

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
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
	c.cloudRefs(s)
	c.telemetry(s.Telemetry)
	c.remediation(s.Remediation, ids)
	c.maintenance(s.Maintenance)
	c.rollback(s.Rollback)
	// health.dependsOn may also name sensors and the compliance score.
	if s.Telemetry != nil {
		for _, sn := range s.Telemetry.Sensors {
			ids["sensor:"+sn.Name] = "spec.telemetry.sensors"
		}
	}
	if s.Compliance != nil {
		ids["compliance"] = "spec.compliance"
	}
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
