package inventory

import (
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/streams"
)

func TestSelector(t *testing.T) {
	n := Node{Site: "plant-7", Node: "n1", Labels: map[string]string{"role": "meter", "tier": "prod"},
		Status: &streams.NodeStatus{Facts: &streams.NodeFacts{Arch: "arm64", CPUs: 4}}}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"role=meter", true},
		{"role==meter", true},
		{"role=gateway", false},
		{"role!=gateway", true},
		{"role!=meter", false},
		{"tier", true},
		{"!tier", false},
		{"gpu", false},
		{"!gpu", true},
		{"role=meter,tier=prod", true},
		{"role=meter,tier=dev", false},
		{"site=plant-7,node=n1", true},
		{"facts.arch=arm64,facts.cpus=4", true},
		{"facts.arch=amd64", false},
	} {
		s, err := ParseSelector(tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		if got := s.Matches(n.All()); got != tc.want {
			t.Errorf("%q matches %v, want %v", tc.sel, got, tc.want)
		}
	}
}

func TestSelectorAndLabelErrorsNameTheValue(t *testing.T) {
	for _, bad := range []string{"ro le=x", "role=a=b", "=x", "role=x!"} {
		_, err := ParseSelector(bad)
		if err == nil || !strings.Contains(err.Error(), strings.TrimSpace(strings.Split(bad, ",")[0])) {
			t.Errorf("selector %q: error %v does not name the term", bad, err)
		}
	}
	for _, tc := range []struct{ arg, want string }{
		{"role", `"role"`},
		{"site=x", `"site"`},
		{"facts.arch=x", `"facts.arch"`},
		{"role=a b", `"a b"`},
		{"role=" + strings.Repeat("x", 64), "longer than 63"},
	} {
		_, _, err := ParseLabels([]string{tc.arg})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("label %q: error %v, want it to name %s", tc.arg, err, tc.want)
		}
	}
	set, remove, err := ParseLabels([]string{"role=meter", "old-"})
	if err != nil || set["role"] != "meter" || len(remove) != 1 || remove[0] != "old" {
		t.Fatalf("ParseLabels = %v %v %v", set, remove, err)
	}
}
