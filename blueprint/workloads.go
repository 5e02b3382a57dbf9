package blueprint

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Container is a container run through podman. The agent owns only the
// containers it labels as its own.
type Container struct {
	Name        string            `json:"name"`
	Image       string            `json:"image" doc:"Image reference; with artifact, the name the loaded archive carries."`
	Artifact    *Artifact         `json:"artifact,omitempty" doc:"Image archive to load instead of pulling."`
	Command     []string          `json:"command,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
	Mounts      []Mount           `json:"mounts,omitempty"`
	Devices     []string          `json:"devices,omitempty" doc:"Device nodes, e.g. /dev/ttyUSB0."`
	Network     string            `json:"network,omitempty" doc:"none or host (default none)."`
	Restart     string            `json:"restart,omitempty" doc:"no, on-failure or always (default always)."`
	CPUs        float64           `json:"cpus,omitempty"`
	Memory      string            `json:"memory,omitempty" doc:"Memory limit, e.g. 256Mi."`
	Labels      map[string]string `json:"labels,omitempty"`
	HealthCheck *HealthCheck      `json:"healthCheck,omitempty"`
	DependsOn   []string          `json:"dependsOn,omitempty"`
}

// Mount binds a host path into a container.
type Mount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// HealthCheck is a command run inside a container.
type HealthCheck struct {
	Command  []string `json:"command"`
	Interval Duration `json:"interval,omitempty"`
	Retries  int      `json:"retries,omitempty"`
}

// Artifact is a file fetched from the hub's artifacts object store (or found
// in the site cache), checked against its sha256.
type Artifact struct {
	Name   string `json:"name" doc:"Object name in the artifacts bucket."`
	SHA256 string `json:"sha256" doc:"Hex sha256 of the object."`
}

// Unit is a systemd unit, optionally with the native executable it runs.
type Unit struct {
	Name       string      `json:"name" doc:"Unit name, e.g. meter.service."`
	Content    string      `json:"content" doc:"Unit file content."`
	Enabled    *bool       `json:"enabled,omitempty" doc:"Enable the unit (default true)."`
	State      string      `json:"state,omitempty" doc:"started or stopped (default started)."`
	Executable *Executable `json:"executable,omitempty"`
	DependsOn  []string    `json:"dependsOn,omitempty"`
}

// Executable is a native binary installed for a unit.
type Executable struct {
	Path     string    `json:"path"`
	Artifact *Artifact `json:"artifact"`
	Mode     string    `json:"mode,omitempty"`
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
		if _, err := ParseBytes(ct.Memory); err != nil {
			c.add(p+".memory", "%v", err)
		}
		if h := ct.HealthCheck; h != nil {
			if len(h.Command) == 0 {
				c.add(p+".healthCheck.command", "is required")
			}
			if h.Retries < 0 {
				c.add(p+".healthCheck.retries", "%d must not be negative", h.Retries)
			}
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

// unitSuffixes are the unit types systemd knows.
var unitSuffixes = []string{"service", "socket", "timer", "path", "mount", "automount", "swap", "target", "slice", "scope", "device"}

func unitSuffix(name string) bool {
	i := strings.LastIndex(name, ".")
	if i <= 0 {
		return false
	}
	for _, s := range unitSuffixes {
		if name[i+1:] == s {
			return true
		}
	}
	return false
}

func (c *checker) units(us []Unit, ids map[string]string) {
	for i, u := range us {
		p := fmt.Sprintf("spec.units[%d]", i)
		c.name(p+".name", u.Name)
		if u.Name != "" && !unitSuffix(u.Name) {
			c.add(p+".name", "%q needs a unit suffix such as .service (one of %s)", u.Name, strings.Join(unitSuffixes, ", "))
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

var bytesRE = regexp.MustCompile(`^([0-9]+)([KMGT]i?)?$`)

// ParseBytes reads a size such as "256Mi", "1G" or "1048576"; empty is 0
// (no limit). Ki, Mi, Gi, Ti are powers of 1024; K, M, G, T of 1000.
func ParseBytes(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	m := bytesRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size like \"256Mi\" or \"1G\"", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	mult := map[string]int64{"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}[m[2]]
	if n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * mult, nil
}
