package blueprint

// CloudConfig is a Terraform configuration the hub provisions for this node.
type CloudConfig struct {
	Name      string            `json:"name"`
	Main      string            `json:"main,omitempty" doc:"Inline HCL."`
	Module    *Artifact         `json:"module,omitempty" doc:"A module archive in the artifacts bucket."`
	Variables map[string]string `json:"variables,omitempty"`
	Outputs   []string          `json:"outputs,omitempty" doc:"Outputs the node needs."`
	Drift     string            `json:"drift,omitempty" doc:"repair or report (default report)."`
}

// Telemetry configures collectors and the site buffer.
type Telemetry struct {
	Retention  Retention   `json:"retention,omitempty"`
	Collectors []Collector `json:"collectors,omitempty"`
	Sensors    []Sensor    `json:"sensors,omitempty"`
}

// Retention limits the site's telemetry buffer.
type Retention struct {
	MaxAge   Duration `json:"maxAge,omitempty"`
	MaxBytes int64    `json:"maxBytes,omitempty"`
}

// Collector turns a collector on with its interval.
type Collector struct {
	Name     string   `json:"name" doc:"host, sensors, units, containers, link or agent."`
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
	Clear    *Condition   `json:"clear,omitempty" doc:"Condition that ends the incident (hysteresis)."`
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
