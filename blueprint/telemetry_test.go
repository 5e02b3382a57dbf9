package blueprint

import (
	"strings"
	"testing"
)

func TestRemediationValidation(t *testing.T) {
	good := `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: hot}
spec:
  containers:
    - {name: web, image: localhost/web:1}
  telemetry:
    retention: {maxAge: 24h, maxBytes: 1048576}
    collectors: [{name: sensors, interval: 5s}, {name: net}]
    sensors: [{name: temperature.cpu, max: 85}]
  remediation:
    - name: cpu-hot
      when: {signal: temperature.cpu, above: 85, for: 60s}
      clear: {below: 75}
      action: {type: restart, target: "container:web"}
      cooldown: 5m
      budget: {max: 3, period: 1h}
`
	bp, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if got := *bp.Spec.Remediation[0].Clear.Below; got != 75 {
		t.Fatalf("clear below %v", got)
	}
	for _, c := range []struct{ clear, want string }{
		{"{above: 90}", "spec.remediation[0].clear: clears a condition above 85, so it needs below"},
		{"{below: 90}", "spec.remediation[0].clear.below: 90 is above the firing threshold 85"},
		{"{signal: other, below: 70}", `spec.remediation[0].clear.signal: "other" must be the condition's signal "temperature.cpu"`},
	} {
		doc := strings.Replace(good, "clear: {below: 75}", "clear: "+c.clear, 1)
		_, err := Parse([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("clear %s: got %v, want %q", c.clear, err, c.want)
		}
	}
}

// TestLogsValidation: spec.telemetry.logs names each bad field with its
// value, and resolves "*" and the default (everything) against the
// blueprint's own units and containers.
func TestLogsValidation(t *testing.T) {
	doc := func(logs string) string {
		return `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: logs}
spec:
  containers:
    - {name: web, image: localhost/web:1}
  units:
    - name: meter.service
      content: "[Service]\nExecStart=/bin/true\n"
  telemetry:
    logs: ` + logs + "\n"
	}
	bp, err := Parse([]byte(doc(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	units, ctrs := bp.Spec.Telemetry.Logs.Sources(&bp.Spec)
	if strings.Join(units, ",") != "meter.service" || strings.Join(ctrs, ",") != "web" {
		t.Fatalf("default selection: units %v containers %v", units, ctrs)
	}
	bp, err = Parse([]byte(doc(`{units: ["*", ssh.service], level: warning, rate: 10}`)))
	if err != nil {
		t.Fatal(err)
	}
	units, ctrs = bp.Spec.Telemetry.Logs.Sources(&bp.Spec)
	if strings.Join(units, ",") != "meter.service,ssh.service" || len(ctrs) != 0 {
		t.Fatalf("selection: units %v containers %v", units, ctrs)
	}
	for _, c := range []struct{ logs, want string }{
		{`{level: loud}`, `spec.telemetry.logs.level: "loud" is not one of emerg, alert, crit, err, warning, notice, info, debug`},
		{`{units: [sshd]}`, `spec.telemetry.logs.units[0]: "sshd" needs a unit suffix`},
		{`{containers: ["a b"]}`, `spec.telemetry.logs.containers[0]: "a b" is not a valid name`},
		{`{rate: -5}`, `spec.telemetry.logs.rate: -5 must not be negative`},
		{`{burst: -1}`, `spec.telemetry.logs.burst: -1 must not be negative`},
	} {
		_, err := Parse([]byte(doc(c.logs)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("logs %s: got %v, want %q", c.logs, err, c.want)
		}
	}
}
