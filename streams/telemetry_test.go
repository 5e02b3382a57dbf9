package streams

import "testing"

func TestMetricSubject(t *testing.T) {
	for _, c := range []struct {
		m    Metric
		want string
	}{
		{Metric{Site: "s1", Node: "n1", Layer: "host", Name: "cpu.percent", Kind: KindMetric}, "telemetry.s1.n1.host.cpu.percent"},
		{Metric{Site: "s1", Node: "n1", Layer: "sensors", Name: "temperature.core 0*>", Kind: KindMetric}, "telemetry.s1.n1.sensors.temperature.core_0__"},
		{Metric{Site: "s1", Node: "n1", Layer: "health", Name: "health", Kind: KindHealth}, "events.s1.n1.health.health"},
		{Metric{Site: "s1", Node: "n1", Layer: "remediation", Name: "remediation..acted", Kind: KindEvent}, "events.s1.n1.remediation.remediation._.acted"},
		{Metric{Site: "s1", Node: "n1", Name: "x"}, "telemetry.s1.n1._.x"},
	} {
		if got := c.m.Subject(); got != c.want {
			t.Errorf("%+v: subject %q, want %q", c.m, got, c.want)
		}
	}
	if got := TelemetryFilter("telemetry", "s1", ""); got != "telemetry.s1.*.>" {
		t.Errorf("filter %q", got)
	}
}
