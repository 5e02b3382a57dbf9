package blueprint

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
