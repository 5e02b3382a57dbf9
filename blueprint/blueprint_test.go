package blueprint

import (
	"encoding/json"
	"errors"
	"runtime"
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

// aliasBomb is the document of issue 12 finding 5: 490 KB that repeats one
// 250 KB string 80,000 times through aliases, under the node-count cap.
func aliasBomb() []byte {
	var b strings.Builder
	b.WriteString("apiVersion: alpha/v1\nkind: Blueprint\nmetadata:\n  name: bomb\n  labels:\n    big: &a ")
	b.WriteString(strings.Repeat("x", 250_000))
	b.WriteString("\nspec:\n  containers:\n    - name: c\n      image: busybox\n      args: [")
	for i := 0; i < 80_000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("*a")
	}
	b.WriteString("]\n")
	return []byte(b.String())
}

func TestAliasExpansionBounded(t *testing.T) {
	doc := aliasBomb()
	if len(doc) > MaxSize {
		t.Fatalf("the bomb is %d bytes, above the document limit: it would not test the expansion cap", len(doc))
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Parse(doc)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("alias bomb parsed")
	}
	for _, want := range []string{"expands to more than 2097152 bytes", "250000-byte value", "spec.containers[0].args["} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// Allocation, not wall time: deterministic on a busy machine. Before the
	// cap this decode allocated gigabytes (and was killed).
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("decoding the bomb allocated %d MiB; want under 64", alloc>>20)
	}
	t.Logf("refused after allocating %d KiB: %v", (after.TotalAlloc-before.TotalAlloc)>>10, err)
}

// A document near the limit that repeats text a few times is still fine.
func TestAliasesWithinBoundAccepted(t *testing.T) {
	doc := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata:\n  name: ok\n  labels:\n    big: &big " + strings.Repeat("x", 100_000) +
		"\nspec:\n  containers:\n    - name: c\n      image: busybox\n      args: [*big, *big, *big]\n"
	if _, err := Parse([]byte(doc)); err != nil {
		t.Fatal(err)
	}
}
