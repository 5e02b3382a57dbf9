package blueprint

// KernelModule is a kernel module loaded or blacklisted.
type KernelModule struct {
	Name    string `json:"name"`
	State   string `json:"state,omitempty" doc:"loaded or blacklisted (default loaded)."`
	Options string `json:"options,omitempty" doc:"Module options, as for modprobe.d."`
}

// Firewall is an nftables rule set in a table the agent owns.
type Firewall struct {
	Table  string         `json:"table,omitempty" doc:"nftables table name (default alpha)."`
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
