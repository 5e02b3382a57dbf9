package streams

import (
	"fmt"
	"time"
)

// Logs as telemetry. Lines travel in their own stream at the site and at the
// hub (LOGS, subjects logs.<site>.<node>.<kind>.<name>), with its own limits,
// so a chatty workload never pushes metrics or events out. They flow up
// like telemetry: same store and forward, ids and dedupe.
const (
	LogsStream = "LOGS"
	LogsRoot   = "logs"
)

// Kinds of log source (LogLine.Kind).
const (
	LogUnit      = "unit"
	LogContainer = "container"
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
	// ID is also the Nats-Msg-Id header. It is derived from the line's
	// place in its source (the journal's cursor, the container's id and
	// timestamp), not from the agent's run, so a line read again after an
	// agent restart carries the same id and the stream's duplicate window
	// drops it.
	ID string `json:"id"`
}

// Subject is where the line is published.
func (l LogLine) Subject() string {
	return LogsRoot + "." + Token(l.Site) + "." + Token(l.Node) + "." + Token(l.Kind) + "." + Token(l.Source)
}

// LogsSubjects is the subject filter of a site's log lines.
func LogsSubjects(site string) string { return LogsRoot + "." + site + ".>" }

// LogsFilter narrows log lines to a site, node, kind and source ("" means
// any).
func LogsFilter(site, node, kind, source string) string {
	tok := func(s string) string {
		if s == "" {
			return "*"
		}
		return Token(s)
	}
	if kind == "" && source == "" {
		return fmt.Sprintf("%s.%s.%s.>", LogsRoot, tok(site), tok(node))
	}
	return fmt.Sprintf("%s.%s.%s.%s.%s", LogsRoot, tok(site), tok(node), tok(kind), tok(source))
}

// Levels are the syslog level names, most severe first; a line's level is
// one of them.
var Levels = []string{"emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"}

// LevelRank is a level's place in Levels (0 emerg .. 7 debug); an unknown
// level ranks as info.
func LevelRank(level string) int {
	for i, l := range Levels {
		if l == level {
			return i
		}
	}
	return 6
}
