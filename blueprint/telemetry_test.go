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
