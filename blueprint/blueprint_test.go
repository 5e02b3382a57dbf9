package blueprint

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const hello = `apiVersion: alpha/v1
kind: Blueprint
metadata:
  name: hello
spec:
  files:
    - path: /etc/hello.conf
      content: |
        greeting=hi
      mode: "0644"
`

func TestParseHello(t *testing.T) {
	bp, err := Parse([]byte(hello))
	if err != nil {
		t.Fatal(err)
	}
	if got := bp.Spec.Files[0]; got.Path != "/etc/hello.conf" || got.Content != "greeting=hi\n" || got.Mode != "0644" {
		t.Fatalf("decoded %+v", got)
	}
}

func TestParseJSON(t *testing.T) {
	doc := `{"apiVersion":"alpha/v1","kind":"Blueprint","metadata":{"name":"j"},"spec":{"files":[{"path":"/a","content":"x"}]}}`
	bp, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if bp.Spec.Files[0].Path != "/a" {
		t.Fatalf("decoded %+v", bp.Spec.Files)
	}
}

func TestUnquotedModeKeepsDigits(t *testing.T) {
	bp, err := Parse([]byte(strings.Replace(hello, `mode: "0644"`, `mode: 0600`, 1)))
	if err != nil {
		t.Fatal(err)
	}
	if bp.Spec.Files[0].Mode != "0600" {
		t.Fatalf("mode %q", bp.Spec.Files[0].Mode)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // every fragment must appear in the error
	}{
		{"malformed", "apiVersion: [", []string{"malformed YAML"}},
		{"empty", "  \n", []string{"document is empty"}},
		{"unknown field", strings.Replace(hello, "mode:", "mod:", 1), []string{`spec.files[0].mod: unknown field "mod" (line 10)`}},
		{"unknown top", hello + "extra: 1\n", []string{`extra: unknown field "extra" (line 11)`}},
		{"wrong type list", strings.Replace(hello, "  files:\n", "  files: 3\n  x:\n", 1), []string{`spec.files: expected a list, got "3"`}},
		{"wrong type int", hello + "  firewall:\n    rules:\n      - action: accept\n        protocol: tcp\n        port: http\n", []string{`spec.firewall.rules[0].port: expected an integer, got "http" (line 15)`}},
		{"escaping path", strings.Replace(hello, "/etc/hello.conf", "/etc/../../x", 1), []string{`spec.files[0].path: "/etc/../../x" must be an absolute, clean path`, "(line 7)"}},
		{"relative path", strings.Replace(hello, "/etc/hello.conf", "../x", 1), []string{`spec.files[0].path: "../x"`}},
		{"bad mode", strings.Replace(hello, `"0644"`, `"0999"`, 1), []string{`spec.files[0].mode: "0999" is not an octal mode`}},
		{"version", strings.Replace(hello, "alpha/v1", "alpha/v9", 1), []string{`apiVersion: "alpha/v9" is not supported`}},
		{"huge", hello + "#" + strings.Repeat("x", MaxSize), []string{"bytes; the limit is 524288"}},
		{"two docs", hello + "---\n" + hello, []string{"more than one YAML document"}},
		{"port range", hello + "  firewall:\n    rules:\n      - action: accept\n        protocol: tcp\n        port: 70000\n", []string{"spec.firewall.rules[0].port: 70000 is out of range"}},
		{"cidr", hello + "  firewall:\n    rules:\n      - action: accept\n        source: 10.0.0.300/8\n", []string{`spec.firewall.rules[0].source: "10.0.0.300/8" is not an address or CIDR`}},
		{"sysctl key", hello + "  sysctl:\n    \"bad key\": 1\n", []string{`spec.sysctl.bad key: "bad key" is not a sysctl key`}},
		{"window never opens", hello + "  maintenance:\n    windows:\n      - days: []\n        start: \"02:00\"\n        end: \"02:00\"\n", []string{"days: is empty", "equals start"}},
		{"dangling dependsOn", strings.Replace(hello, `mode: "0644"`, "mode: \"0644\"\n      dependsOn: [container:nope]", 1), []string{`spec.files[0].dependsOn[0]: "container:nope" names no resource`}},
		{"all at once", strings.Replace(strings.Replace(hello, `"0644"`, `"9"`, 1), "name: hello", "name: hello\n  bogus: 1", 1), []string{"metadata.bogus", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestValidationReportsEveryProblem(t *testing.T) {
	doc := `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: many}
spec:
  files:
    - {path: relative, mode: "0999"}
    - {path: /ok}
    - {path: /ok}
`
	_, err := Parse([]byte(doc))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("got %v", err)
	}
	if len(errs) != 3 {
		t.Fatalf("want 3 problems, got %d: %v", len(errs), errs)
	}
}

func TestAliasBombRefused(t *testing.T) {
	doc := "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
	if _, err := Parse([]byte(doc)); err == nil {
		t.Fatal("alias bomb parsed")
	}
}

func TestSchemaIsJSON(t *testing.T) {
	b, err := Schema()
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	spec := m["properties"].(map[string]any)["spec"].(map[string]any)
	for _, sec := range []string{"files", "containers", "units", "sysctl", "kernelModules", "firewall", "network", "compliance", "cloud", "telemetry", "health", "remediation", "maintenance"} {
		if _, ok := spec["properties"].(map[string]any)[sec]; !ok {
			t.Errorf("schema lacks spec.%s", sec)
		}
	}
	if spec["additionalProperties"] != false {
		t.Error("schema allows unknown spec fields")
	}
}
