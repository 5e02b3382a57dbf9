package blueprint

import (
	"fmt"
	"slices"
	"strings"

	"github.com/alpha-edge/alpha/streams"
)

// Telemetry configures collectors and the site buffer.
type Telemetry struct {
	Retention  Retention   `json:"retention,omitempty"`
	Collectors []Collector `json:"collectors,omitempty"`
	Sensors    []Sensor    `json:"sensors,omitempty"`
	Logs       *Logs       `json:"logs,omitempty" doc:"Log lines collected into the site's LOGS stream; none without it."`
}

// Logs selects the lines the agent collects: units' journal and containers'
// output, above a level floor, with a rate limit per source.
type Logs struct {
	Units      []string `json:"units,omitempty" doc:"Units whose journal is collected, or \"*\" for every unit of the blueprint. With neither units nor containers: every unit and container of the blueprint."`
	Containers []string `json:"containers,omitempty" doc:"Containers whose output is collected, or \"*\" for every container of the blueprint."`
	Level      string   `json:"level,omitempty" doc:"Lowest level kept: emerg, alert, crit, err, warning, notice, info (default) or debug."`
	Rate       int      `json:"rate,omitempty" doc:"Lines per second kept per source (default 100); lines beyond are dropped and counted (metric logs.dropped)."`
	Burst      int      `json:"burst,omitempty" doc:"Lines a source may write at once above its rate (default twice the rate)."`
}

// Defaults of spec.telemetry.logs.
const (
	DefaultLogRate  = 100
	DefaultLogLevel = "info"
)

// Sources resolves the selection against the blueprint: the unit and
// container names whose lines are collected.
func (l *Logs) Sources(s *Spec) (units, containers []string) {
	if l == nil {
		return nil, nil
	}
	all := len(l.Units) == 0 && len(l.Containers) == 0
	if all || slices.Contains(l.Units, "*") {
		for _, u := range s.Units {
			units = append(units, u.Name)
		}
	}
	if all || slices.Contains(l.Containers, "*") {
		for _, c := range s.Containers {
			containers = append(containers, c.Name)
		}
	}
	for _, u := range l.Units {
		if u != "*" && !slices.Contains(units, u) {
			units = append(units, u)
		}
	}
	for _, c := range l.Containers {
		if c != "*" && !slices.Contains(containers, c) {
			containers = append(containers, c)
		}
	}
	return units, containers
}

// Retention limits the site's telemetry buffer.
type Retention struct {
	MaxAge   Duration `json:"maxAge,omitempty"`
	MaxBytes int64    `json:"maxBytes,omitempty"`
}

// Collector turns a collector on with its interval.
type Collector struct {
	Name     string   `json:"name" doc:"host, sensors, net, units, containers, link or agent."`
	Interval Duration `json:"interval,omitempty"`
}

// Sensor declares the healthy range of a signal.
type Sensor struct {
	Name string   `json:"name" doc:"Signal name, e.g. temperature.cpu."`
	Min  *float64 `json:"min,omitempty"`
	Max  *float64 `json:"max,omitempty"`
}

// Health declares what the solution depends on.
type Health struct {
	DependsOn []string `json:"dependsOn,omitempty" doc:"Resources whose health multiplies into the solution's."`
}

// Remediation is a condition and an action, with hysteresis and a budget.
type Remediation struct {
	Name     string       `json:"name"`
	When     Condition    `json:"when"`
	Clear    *Condition   `json:"clear,omitempty" doc:"Condition on the same signal that ends the incident (hysteresis); default: when no longer holds."`
	Action   RemedyAction `json:"action"`
	Cooldown Duration     `json:"cooldown,omitempty"`
	Budget   *Budget      `json:"budget,omitempty"`
}

// Condition compares a signal with a threshold for a while.
type Condition struct {
	Signal string   `json:"signal"`
	Above  *float64 `json:"above,omitempty"`
	Below  *float64 `json:"below,omitempty"`
	For    Duration `json:"for,omitempty"`
}

// RemedyAction is what a remediation does.
type RemedyAction struct {
	Type    string   `json:"type" doc:"alert, restart, stop or exec."`
	Target  string   `json:"target,omitempty" doc:"Workload, e.g. container:web or unit:meter.service."`
	Command []string `json:"command,omitempty"`
}

// Budget limits how many actions a policy may take per period.
type Budget struct {
	Max    int      `json:"max"`
	Period Duration `json:"period"`
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
		c.oneOf(p+".name", col.Name, "host", "sensors", "net", "units", "containers", "link", "agent")
		if col.Interval.Duration < 0 {
			c.add(p+".interval", "%s must not be negative", col.Interval)
		}
	}
	c.logs(t.Logs)
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

func (c *checker) logs(l *Logs) {
	if l == nil {
		return
	}
	for i, u := range l.Units {
		p := fmt.Sprintf("spec.telemetry.logs.units[%d]", i)
		if u == "*" {
			continue
		}
		c.name(p, u)
		if u != "" && !unitSuffix(u) {
			c.add(p, "%q needs a unit suffix such as .service (one of %s)", u, strings.Join(unitSuffixes, ", "))
		}
	}
	for i, n := range l.Containers {
		if n != "*" {
			c.name(fmt.Sprintf("spec.telemetry.logs.containers[%d]", i), n)
		}
	}
	c.oneOf("spec.telemetry.logs.level", l.Level, streams.Levels...)
	if l.Rate < 0 {
		c.add("spec.telemetry.logs.rate", "%d must not be negative", l.Rate)
	}
	if l.Burst < 0 {
		c.add("spec.telemetry.logs.burst", "%d must not be negative", l.Burst)
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
		if r.When.For.Duration < 0 {
			c.add(p+".when.for", "%s must not be negative", r.When.For)
		}
		if r.Clear != nil {
			c.clear(p+".clear", r.When, *r.Clear)
		}
		if r.Cooldown.Duration < 0 {
			c.add(p+".cooldown", "%s must not be negative", r.Cooldown)
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

// clear checks a hysteresis condition: same signal, one threshold, on the
// far side of the firing threshold (clearing above 85 at 90 would flap).
func (c *checker) clear(p string, when, cl Condition) {
	if cl.Signal != "" && cl.Signal != when.Signal {
		c.add(p+".signal", "%q must be the condition's signal %q (or empty)", cl.Signal, when.Signal)
	}
	if (cl.Above == nil) == (cl.Below == nil) {
		c.add(p, "needs exactly one of above or below")
		return
	}
	switch {
	case when.Above != nil && cl.Below == nil:
		c.add(p, "clears a condition above %v, so it needs below", *when.Above)
	case when.Above != nil && *cl.Below > *when.Above:
		c.add(p+".below", "%v is above the firing threshold %v", *cl.Below, *when.Above)
	case when.Below != nil && cl.Above == nil:
		c.add(p, "clears a condition below %v, so it needs above", *when.Below)
	case when.Below != nil && *cl.Above < *when.Below:
		c.add(p+".above", "%v is below the firing threshold %v", *cl.Above, *when.Below)
	}
}
