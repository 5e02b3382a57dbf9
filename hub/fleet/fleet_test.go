package fleet

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/streams"
)

const doc = `apiVersion: alpha/v1
kind: Fleet
metadata:
  name: meters
spec:
  selector: role=meter
  params:
    defaults: {level: info}
    sites:
      plant-7: {bucket: plant7-data}
    nodes:
      plant-7.n1: {ip: 10.0.0.1}
      plant-7.n2: {ip: 10.0.0.2, level: debug}
  rollout:
    batches: ["10%", "50%", "100%"]
    minHealth: 0.9
    for: 10s
    deadline: 1m
  template: |
    apiVersion: alpha/v1
    kind: Blueprint
    metadata:
      name: meter
    spec:
      files:
        - path: /etc/meter.conf
          content: "site={{ .Site }} node={{ .Node }} bucket={{ .Params.bucket }} ip={{ .Params.ip }} level={{ .Params.level }}\n"
`

func node(site, name string) inventory.Node {
	return inventory.Node{Site: site, Node: name, Labels: map[string]string{"role": "meter"}}
}

func TestRenderPerNodeParamsAndRollbackGuard(t *testing.T) {
	f, err := Parse([]byte(doc), ".")
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.Render(node("plant-7", "n2"), "42")
	if err != nil {
		t.Fatal(err)
	}
	bp, err := blueprint.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := bp.Spec.Files[0].Content, "site=plant-7 node=n2 bucket=plant7-data ip=10.0.0.2 level=debug\n"; got != want {
		t.Errorf("content %q, want %q", got, want)
	}
	rb := bp.Spec.Rollback
	if rb == nil || rb.MinHealth != 0.9 || rb.For.Duration != 10*time.Second || rb.Deadline.Duration != time.Minute {
		t.Errorf("rollback guard %+v, want the rollout's gate", rb)
	}
	if bp.Metadata.Annotations[AnnotationFleet] != "meters" || bp.Metadata.Annotations[AnnotationGeneration] != "42" {
		t.Errorf("annotations %v", bp.Metadata.Annotations)
	}
}

// A parameter a node lacks is an error naming the node and the key, never
// an empty value in a signed blueprint; nothing is staged for anyone.
func TestMissingParameterNamesTheNode(t *testing.T) {
	f, err := Parse([]byte(doc), ".")
	if err != nil {
		t.Fatal(err)
	}
	seed, _, err := sign.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	_, staged, err := f.Build([]inventory.Node{node("plant-7", "n1"), node("plant-9", "n1")}, seed, time.Now())
	if err == nil {
		t.Fatal("fleet built with a missing parameter")
	}
	for _, want := range []string{"plant-9.n1", `"bucket"`, "1 of 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "plant-7.n1") {
		t.Errorf("error %q blames a node that renders", err)
	}
	if staged != nil {
		t.Errorf("staged %d blueprints despite the error", len(staged))
	}
}

func TestBuildSignsForEachNode(t *testing.T) {
	f, err := Parse([]byte(doc), ".")
	if err != nil {
		t.Fatal(err)
	}
	seed, pub, err := sign.NewPublisher()
	if err != nil {
		t.Fatal(err)
	}
	meta, staged, err := f.Build([]inventory.Node{node("plant-7", "n1"), node("plant-7", "n2")}, seed, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if meta.Signer != pub || len(staged) != 2 {
		t.Fatalf("meta %+v, %d staged", meta, len(staged))
	}
	trusted := map[string]bool{pub: true}
	for _, s := range staged {
		p, err := sign.Open(trusted, s.Key, s.Envelope)
		if err != nil {
			t.Fatalf("%s: %v", s.Key, err)
		}
		if !strings.Contains(string(p.Blueprint), s.Key[len("plant-7."):]) {
			t.Errorf("%s: signed blueprint is not its own: %s", s.Key, p.Blueprint)
		}
		// An envelope signed for one node does not open as another's.
		other := "plant-7.n1"
		if s.Key == other {
			other = "plant-7.n2"
		}
		if _, err := sign.Open(trusted, other, s.Envelope); err == nil {
			t.Errorf("%s's envelope opens as %s", s.Key, other)
		}
	}
}

func TestPlanBatches(t *testing.T) {
	keys := func(sites, nodes int) []string {
		var out []string
		for s := range sites {
			for n := range nodes {
				out = append(out, fmt.Sprintf("s%d.n%d", s, n))
			}
		}
		return out
	}
	sizes := func(bs [][]string) []int {
		var out []int
		for _, b := range bs {
			out = append(out, len(b))
		}
		return out
	}
	for _, tc := range []struct {
		batches []string
		n       []string
		want    string
	}{
		{[]string{"10%", "50%", "100%"}, keys(8, 5), "[4 16 20]"},
		{[]string{"1", "50%", "100%"}, keys(2, 2), "[1 1 2]"},
		{[]string{"10%", "100%"}, keys(1, 3), "[1 2]"},
		{nil, keys(2, 3), "[6]"},
		{[]string{"site"}, keys(3, 2), "[2 2 2]"},
		{[]string{"50%", "60%", "100%"}, keys(1, 2), "[1 1]"},
	} {
		got := fmt.Sprint(sizes(Policy{Batches: tc.batches}.Plan(tc.n)))
		if got != tc.want {
			t.Errorf("%v over %d nodes: %s, want %s", tc.batches, len(tc.n), got, tc.want)
		}
	}
}

func TestFleetErrorsNameFieldAndValue(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"name: meters", "name: Meters!", `"Meters!"`},
		{"selector: role=meter", "selector: role=a=b", "spec.selector"},
		{`batches: ["10%", "50%", "100%"]`, `batches: ["10%", "50"]`, `"50"`},
		{`batches: ["10%", "50%", "100%"]`, `batches: ["ten", "100%"]`, `"ten"`},
		{"minHealth: 0.9", "minHealth: 2", "minHealth"},
		{"deadline: 1m", "deadline: 5s", "for"},
		{"kind: Fleet", "kind: Fleets", `"Fleets"`},
		{"  rollout:", "  rolout:", "rolout"},
		{"{{ .Params.level }}", "{{ .Params.level", "spec.template"},
	} {
		_, err := Parse([]byte(strings.Replace(doc, tc.from, tc.to, 1)), ".")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s -> %s: error %v, want it to name %s", tc.from, tc.to, err, tc.want)
		}
	}
}

// Facts are the node's own report. A node (or its site) that reports a
// fact with YAML in it must not get that YAML signed into its blueprint by
// a template that prints the fact.
func TestReportedFactsCannotInjectIntoTheSignedBlueprint(t *testing.T) {
	d := strings.Replace(doc, "ip={{ .Params.ip }}", `ip={{ .Params.ip }} os={{ index .Labels "facts.os" }}`, 1)
	f, err := Parse([]byte(d), ".")
	if err != nil {
		t.Fatal(err)
	}
	n := node("plant-7", "n1")
	n.Status = &streams.NodeStatus{Facts: &streams.NodeFacts{OS: "debian 13\"\n    - path: /etc/evil\n      content: \"pwned"}}
	out, err := f.Render(n, "1")
	if err != nil {
		t.Fatal(err)
	}
	bp, err := blueprint.Parse(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(bp.Spec.Files) != 1 {
		t.Fatalf("the rendered blueprint has %d files (%+v), want only the template's", len(bp.Spec.Files), bp.Spec.Files)
	}
	if got := bp.Spec.Files[0].Content; strings.Contains(got, "\n    -") || strings.Contains(got, `"`) || !strings.Contains(got, "os=debian_13") {
		t.Errorf("content %q carries the fact unescaped", got)
	}
}
