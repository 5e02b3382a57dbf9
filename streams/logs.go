package streams

import "time"

// Logs as telemetry. Lines travel in their own stream at the site and at the
// hub (LOGS, subjects logs.<site>.<node>.<kind>.<name>), with its own limits,
// so a chatty workload never pushes metrics or events out. They flow up
// like telemetry: same store and forward, ids and dedupe.
const (
	LogsStream = "LOGS"
	LogsRoot   = "logs"
)

// LogLine is one line of a unit's journal or a container's output.
type LogLine struct {
	TS     time.Time `json:"ts"`
	Site   string    `json:"site"`
	Node   string    `json:"node"`
	Kind   string    `json:"kind"`   // unit or container
	Source string    `json:"source"` // the unit or container name
	Level  string    `json:"level"`  // emerg..debug (syslog names); info when unknown
	Text   string    `json:"text"`
	// ID is node, boot id and sequence, also the Nats-Msg-Id header, as for
	// Metric.ID.
	ID string `json:"id"`
}

// Subject is where the line is published.
func (l LogLine) Subject() string {
	return LogsRoot + "." + Token(l.Site) + "." + Token(l.Node) + "." + Token(l.Kind) + "." + Token(l.Source)
}
