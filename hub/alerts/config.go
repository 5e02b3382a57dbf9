package alerts

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/alpha-edge/alpha/streams"
)

// Kinds of rule.
const (
	KindStale      = "stale"      // a site not heard from for For
	KindHealth     = "health"     // a node's solution health below Below for For
	KindDrift      = "drift"      // Count drift repairs of one resource within Within
	KindEscalated  = "escalated"  // a remediation policy spent its budget within For
	KindPermission = "permission" // a node reports that its leaf refused an operation
)

// Duration is a time.Duration written as "90s" or "5m" in the file.
type Duration time.Duration

// UnmarshalYAML reads a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: duration %q: %w", n.Line, n.Value, err)
	}
	*d = Duration(v)
	return nil
}

// Rule is one alerting rule.
type Rule struct {
	Name   string   `yaml:"name"` // alertname; default: the kind
	Kind   string   `yaml:"kind"`
	For    Duration `yaml:"for"`
	Below  float64  `yaml:"below"`
	Count  int      `yaml:"count"`
	Within Duration `yaml:"within"`
}

// Config is the alerting part of the hub's configuration (alpha hub
// --alerts FILE).
type Config struct {
	// Webhook is an Alertmanager-compatible endpoint (its /api/v2/alerts)
	// that receives every firing and resolved alert; empty: none.
	Webhook string `yaml:"webhook"`
	// Interval between two evaluations (default 15s).
	Interval Duration `yaml:"interval"`
	// Resend repeats firing alerts to the webhook this often, as
	// Alertmanager expects of its clients (default 1m).
	Resend Duration `yaml:"resend"`
	Rules  []Rule   `yaml:"rules"`
}

// Default is what a hub evaluates without --alerts.
func Default() Config {
	return Config{Rules: []Rule{
		{Kind: KindStale, For: Duration(5 * time.Minute)},
		{Kind: KindHealth, Below: 0.5, For: Duration(5 * time.Minute)},
		{Kind: KindDrift, Count: 3, Within: Duration(time.Hour)},
		{Kind: KindEscalated, For: Duration(time.Hour)},
		{Kind: KindPermission},
	}}
}

// Load reads a configuration file (YAML) and validates it.
func Load(path string) (Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("alerts: %w", err)
	}
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("alerts: %s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("alerts: %s: %w", path, err)
	}
	return c, nil
}

// Validate reports every bad field at once, with its path, and fills in
// the rules' default names.
func (c *Config) Validate() error {
	var errs []error
	if c.Webhook != "" {
		if u, err := url.Parse(c.Webhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("webhook %q: want an http(s) URL", c.Webhook))
		}
	}
	if c.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval %v: must not be negative", time.Duration(c.Interval)))
	}
	names := map[string]int{}
	for i := range c.Rules {
		r := &c.Rules[i]
		at := fmt.Sprintf("rules[%d]", i)
		if r.Name == "" {
			r.Name = r.Kind
		}
		if err := streams.ValidID("rule", r.Name); err != nil {
			errs = append(errs, fmt.Errorf("%s.name: %w", at, err))
		}
		if j, dup := names[r.Name]; dup {
			errs = append(errs, fmt.Errorf("%s.name %q: also the name of rules[%d]", at, r.Name, j))
		}
		names[r.Name] = i
		switch r.Kind {
		case KindStale, KindEscalated:
			if r.For <= 0 {
				errs = append(errs, fmt.Errorf("%s.for %v: must be positive for kind %s", at, time.Duration(r.For), r.Kind))
			}
		case KindHealth:
			if r.Below <= 0 || r.Below > 1 {
				errs = append(errs, fmt.Errorf("%s.below %v: must be in (0, 1]", at, r.Below))
			}
			if r.For < 0 {
				errs = append(errs, fmt.Errorf("%s.for %v: must not be negative", at, time.Duration(r.For)))
			}
		case KindDrift:
			if r.Count < 1 {
				errs = append(errs, fmt.Errorf("%s.count %d: must be at least 1", at, r.Count))
			}
			if r.Within <= 0 {
				errs = append(errs, fmt.Errorf("%s.within %v: must be positive", at, time.Duration(r.Within)))
			}
		case KindPermission:
		default:
			errs = append(errs, fmt.Errorf("%s.kind %q: not one of stale, health, drift, escalated, permission", at, r.Kind))
		}
	}
	return errors.Join(errs...)
}

func (c Config) interval() time.Duration {
	if c.Interval > 0 {
		return time.Duration(c.Interval)
	}
	return 15 * time.Second
}

func (c Config) resend() time.Duration {
	if c.Resend > 0 {
		return time.Duration(c.Resend)
	}
	return time.Minute
}
