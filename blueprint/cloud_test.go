package blueprint

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const cloudDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: c}
spec:
  cloud:
    - name: logs
      main: 'resource "terraform_data" "b" {}'
      variables: {site: s1}
      outputs: [bucket_name]
  containers:
    - name: web
      image: localhost/web:1
      env:
        LOG_BUCKET: s3://${cloud.logs.bucket_name}/x
`

func TestCloudRefsValid(t *testing.T) {
	bp, err := Parse([]byte(cloudDoc))
	if err != nil {
		t.Fatal(err)
	}
	refs, err := CloudRefs(bp.Spec.Containers[0].Env["LOG_BUCKET"])
	if err != nil || len(refs) != 1 || refs[0] != (CloudRef{"logs", "bucket_name"}) {
		t.Fatalf("refs %v, err %v", refs, err)
	}
	got, missing := ExpandCloudRefs("a ${cloud.logs.bucket_name} ${cloud.logs.gone} ${HOME}", func(r CloudRef) (string, bool) {
		return "B", r.Output == "bucket_name"
	})
	if got != "a B ${cloud.logs.gone} ${HOME}" || len(missing) != 1 || missing[0].Output != "gone" {
		t.Fatalf("expanded %q, missing %v", got, missing)
	}
}

func TestCloudRefErrors(t *testing.T) {
	for _, tc := range []struct{ name, from, to, want string }{
		{"unlisted output", "${cloud.logs.bucket_name}", "${cloud.logs.nope}",
			`spec.containers[0].env.LOG_BUCKET: ${cloud.logs.nope} refers to output "nope", which spec.cloud[0].outputs does not list (line 14)`},
		{"unknown config", "${cloud.logs.bucket_name}", "${cloud.metrics.bucket_name}",
			`spec.containers[0].env.LOG_BUCKET: ${cloud.metrics.bucket_name} refers to cloud configuration "metrics", which spec.cloud does not declare`},
		{"malformed", "${cloud.logs.bucket_name}", "${cloud.logs}",
			`spec.containers[0].env.LOG_BUCKET: "${cloud.logs}" is not a reference like ${cloud.NAME.OUTPUT}`},
		{"dotted name", "name: logs", "name: lo.gs", `spec.cloud[0].name: "lo.gs" is not a valid configuration name`},
		{"bad drift", "outputs: [bucket_name]", "outputs: [bucket_name]\n      drift: fix", `spec.cloud[0].drift: "fix" is not one of repair, report`},
		{"bad output name", "outputs: [bucket_name]", "outputs: [bucket_name, 9x]", `spec.cloud[0].outputs[1]: "9x" is not a Terraform output name`},
		{"bad variable", "{site: s1}", `{"bad var": s1}`, `spec.cloud[0].variables.bad var: "bad var" is not a Terraform variable name`},
		{"no main", `main: 'resource "terraform_data" "b" {}'`, "main: ''", `spec.cloud[0]: needs exactly one of main or module`},
		{"unit content", "  containers:", "  units:\n    - name: u.service\n      content: \"X=${cloud.x.y}\"\n  containers:", `spec.units[0].content: ${cloud.x.y} refers to cloud configuration "x"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(cloudDoc, tc.from, tc.to, 1)
			_, err := Parse([]byte(doc))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("want invalid, got %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
		})
	}
}

func TestCloudDigestIgnoresOutputsAndPolicy(t *testing.T) {
	a := CloudConfig{Name: "x", Main: "m", Variables: map[string]string{"a": "1"}}
	b := a
	b.Outputs, b.Drift = []string{"o"}, DriftRepair
	if a.Digest() != b.Digest() {
		t.Fatal("outputs or drift policy changed the digest")
	}
	b.Variables = map[string]string{"a": "2"}
	if a.Digest() == b.Digest() {
		t.Fatal("a variable change kept the digest")
	}
}

// The worked example of the README must stay valid.
func TestExampleFullValidates(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "examples", "full.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	bp, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(bp.Spec.Cloud) != 1 || len(bp.Spec.Containers) != 1 || len(bp.Spec.Units) != 1 || bp.Spec.Firewall == nil {
		t.Fatalf("example lost a section: %+v", bp.Spec)
	}
}

func TestExecUses(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"benign", "resource \"terraform_data\" \"x\" {\n  input = \"external-ip\"\n}\n", nil},
		{"local-exec", "resource \"terraform_data\" \"x\" {\n  provisioner \"local-exec\" {\n    command = \"id\"\n  }\n}\n", []string{"local-exec (line 2)"}},
		{"bare label", "resource \"terraform_data\" \"x\" {\n  provisioner local-exec {\n  }\n}\n", []string{"local-exec (line 2)"}},
		{"escaped", "resource \"terraform_data\" \"x\" {\n  provisioner \"local\\u002dexec\" {}\n}\n", []string{"local-exec (line 2)"}},
		{"remote", "provisioner \"remote-exec\" {}", []string{"remote-exec (line 1)"}},
		{"external data", "data \"external\" \"x\" {\n  program = [\"sh\"]\n}\n", []string{"external (line 1)"}},
		{"external json", `{"data": {"external": {"x": {"program": ["sh"]}}}}`, []string{"external (line 1)"}},
		{"json escaped", `{"resource": {"terraform_data": {"x": {"provisioner": [{"\u006cocal-exec": {"command": "id"}}]}}}}`, []string{"local-exec (line 1)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ExecUses(tc.src)
			if strings.Join(got, ";") != strings.Join(tc.want, ";") {
				t.Fatalf("ExecUses = %q, want %q", got, tc.want)
			}
		})
	}
}
