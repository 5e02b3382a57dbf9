package blueprint

import (
	"strings"
	"testing"
)

func TestWorkloadValidation(t *testing.T) {
	head := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: w}\nspec:\n"
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"memory", "  containers:\n    - {name: a, image: i, memory: 12 parsecs}\n",
			[]string{`spec.containers[0].memory: "12 parsecs" is not a size`}},
		{"network", "  containers:\n    - {name: a, image: i, network: bridge}\n",
			[]string{`spec.containers[0].network: "bridge" is not one of none, host`}},
		{"device", "  containers:\n    - {name: a, image: i, devices: [/etc/passwd]}\n",
			[]string{`spec.containers[0].devices[0]: "/etc/passwd" is not a device path under /dev`}},
		{"health", "  containers:\n    - {name: a, image: i, healthCheck: {command: []}}\n",
			[]string{`spec.containers[0].healthCheck.command: is required`}},
		{"artifact sha", "  containers:\n    - {name: a, image: i, artifact: {name: x, sha256: abc}}\n",
			[]string{`spec.containers[0].artifact.sha256: "abc" is not a hex sha256`}},
		{"unit suffix", "  units:\n    - {name: meter, content: x}\n",
			[]string{`spec.units[0].name: "meter" needs a unit suffix`}},
		{"unit type", "  units:\n    - {name: meter.exe, content: x}\n",
			[]string{`spec.units[0].name: "meter.exe" needs a unit suffix`}},
		{"executable", "  units:\n    - {name: m.service, content: x, executable: {path: bin/m, mode: \"999\"}}\n",
			[]string{`spec.units[0].executable.path: "bin/m"`, "spec.units[0].executable.artifact: is required", `spec.units[0].executable.mode: "999"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head + tc.body))
			if err == nil {
				t.Fatal("parsed without error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "512": 512, "1K": 1000, "256Mi": 256 << 20, "1Gi": 1 << 30, "2G": 2e9} {
		got, err := ParseBytes(in)
		if err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"1.5G", "-1", "1Zi", "99999999999999999999Ti"} {
		if _, err := ParseBytes(bad); err == nil {
			t.Errorf("ParseBytes(%q) accepted", bad)
		}
	}
}
