package telemetry_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// writeHwmon lays out one hwmon chip under sys as the kernel's
// sysfs-interface does.
func writeHwmon(t *testing.T, sys, chip, name string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(sys, "class/hwmon", chip)
	check.NoError(t, os.MkdirAll(dir, 0o755))
	check.NoError(t, os.WriteFile(filepath.Join(dir, "name"), []byte(name+"\n"), 0o644))
	for f, v := range files {
		check.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o644))
	}
}

// TestSensorsEveryHwmonClass reads a fake hwmon tree (HOST_SYS) with every
// class the kernel's sysfs-interface defines: temperatures, voltages, fans,
// power and current come out in one form, scaled to their units, named by
// chip and label; unlabelled inputs of one class are told apart.
func TestSensorsEveryHwmonClass(t *testing.T) {
	sys := t.TempDir()
	writeHwmon(t, sys, "hwmon0", "cpu", map[string]string{"temp1_input": "61500"})
	writeHwmon(t, sys, "hwmon1", "nct6775", map[string]string{
		"in0_input": "1104", "in0_label": "Vcore",
		"in1_input":  "12096",
		"in2_input":  "3312",
		"fan1_input": "1830", "fan2_input": "0",
		"temp1_input": "40000", "temp1_label": "SYSTIN",
		"temp1_max": "80000", // not an input: ignored
	})
	writeHwmon(t, sys, "hwmon2", "ina219", map[string]string{"curr1_input": "1250", "power1_input": "6250000", "in1_input": "5000"})
	writeHwmon(t, sys, "hwmon3", "amdgpu", map[string]string{"power1_average": "35000000"})
	t.Setenv("HOST_SYS", sys)

	ms, err := telemetry.Collect(context.Background(), telemetry.Sensors{})
	check.NoError(t, err)
	got := map[string]float64{}
	units := map[string]string{}
	for _, m := range ms {
		got[m.Name] = m.Value
		units[m.Name] = m.Unit
		check.Equal(t, m.Layer, "sensors")
	}
	want := map[string]struct {
		v    float64
		unit string
	}{
		"temperature.cpu":            {61.5, "Cel"},
		"temperature.nct6775_systin": {40, "Cel"},
		"voltage.nct6775_vcore":      {1.104, "V"},
		"voltage.nct6775_in1":        {12.096, "V"},
		"voltage.nct6775_in2":        {3.312, "V"},
		"fan.nct6775_fan1":           {1830, "rpm"},
		"fan.nct6775_fan2":           {0, "rpm"},
		"current.ina219":             {1.25, "A"},
		"power.ina219":               {6.25, "W"},
		"voltage.ina219":             {5, "V"},
		"power.amdgpu":               {35, "W"},
	}
	for name, w := range want {
		v, ok := got[name]
		if !ok {
			t.Errorf("no %s in %v", name, got)
			continue
		}
		if v != w.v || units[name] != w.unit {
			t.Errorf("%s = %v %s, want %v %s", name, v, units[name], w.v, w.unit)
		}
	}
	check.Equal(t, len(ms), len(want))

	// The fan stops, the voltage sags: the next sample says so.
	writeHwmon(t, sys, "hwmon1", "nct6775", map[string]string{"fan1_input": "0", "in1_input": "11020"})
	ms, err = telemetry.Collect(context.Background(), telemetry.Sensors{})
	check.NoError(t, err)
	for _, m := range ms {
		got[m.Name] = m.Value
	}
	check.Equal(t, got["fan.nct6775_fan1"], 0.0)
	check.Equal(t, got["voltage.nct6775_in1"], 11.02)
}
