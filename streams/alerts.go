package streams

import "time"

// Alerts, evaluated by the hub (package hub/alerts) from what the sites
// send up. The firing ones are the keys of the hub's AlertsBucket (one per
// alert, deleted when it resolves); every firing and resolution is also a
// message on AlertSubject, which the hub's EVENTS stream captures. Only the
// hub writes them: no site credential may publish under AlertsRoot.
const (
	AlertsBucket = "alerts"
	AlertsRoot   = "alerts"
	// AlertFiring and AlertResolved are an Alert's states.
	AlertFiring   = "firing"
	AlertResolved = "resolved"
)

// Alert is one alert of one rule about a site, a node or a resource.
type Alert struct {
	Name     string    `json:"name"` // the rule's name (Alertmanager's alertname)
	Kind     string    `json:"kind"` // stale, health, drift, escalated, permission
	Tenant   string    `json:"tenant,omitempty"`
	Site     string    `json:"site"`
	Node     string    `json:"node,omitempty"`
	Resource string    `json:"resource,omitempty"`
	State    string    `json:"state"`
	Summary  string    `json:"summary"`
	StartsAt time.Time `json:"startsAt"`
	EndsAt   time.Time `json:"endsAt,omitzero"`
}

// AlertSubject is where an alert's firing and resolution are published:
// alerts.<site>.<node>.<name> (node _ for a site's alert).
func AlertSubject(a Alert) string {
	return AlertsRoot + "." + Token(a.Site) + "." + Token(a.Node) + "." + Token(a.Name)
}
