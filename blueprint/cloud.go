package blueprint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// CloudConfig is a Terraform configuration the hub provisions for this node.
// The node holds no cloud credentials: it only reads the outputs listed here,
// which the hub publishes and the site mirrors.
type CloudConfig struct {
	Name      string            `json:"name" doc:"Configuration name; references use ${cloud.NAME.OUTPUT}."`
	Main      string            `json:"main,omitempty" doc:"Inline HCL."`
	Module    *Artifact         `json:"module,omitempty" doc:"A module archive (tar or tar.gz) in the artifacts bucket."`
	Variables map[string]string `json:"variables,omitempty" doc:"Values of the configuration's input variables."`
	Outputs   []string          `json:"outputs,omitempty" doc:"Outputs the node needs."`
	Drift     string            `json:"drift,omitempty" doc:"repair or report (default report)."`
}

// Drift policies: what the hub does when a periodic re-plan finds the cloud
// changed behind Terraform's back.
const (
	DriftRepair = "repair"
	DriftReport = "report"
)

// Digest is a stable digest of what Terraform applies (configuration and
// variables). Outputs and the drift policy are left out: changing them needs
// no apply. The hub records the digest its outputs came from, so the agent
// can tell outputs of this revision from older ones.
func (c CloudConfig) Digest() string {
	data, _ := json.Marshal(struct {
		Main      string            `json:"main,omitempty"`
		Module    *Artifact         `json:"module,omitempty"`
		Variables map[string]string `json:"variables,omitempty"`
	}{c.Main, c.Module, c.Variables})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// CloudRef is one ${cloud.CONFIG.OUTPUT} reference.
type CloudRef struct {
	Config string
	Output string
}

// String is the reference as written in a blueprint.
func (r CloudRef) String() string { return "${cloud." + r.Config + "." + r.Output + "}" }

// cloudNameRE is stricter than other names: the config name becomes a part
// of a KV key (site.node.config) and a reference token, so no dots.
var cloudNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`)

// tfIdentRE is a Terraform identifier: variable and output names.
var tfIdentRE = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_-]{0,127}$`)

// cloudRefRE matches a well-formed reference; anything else starting with
// ${cloud. is reported as malformed rather than passed through silently.
var cloudRefRE = regexp.MustCompile(`\$\{cloud\.([a-zA-Z0-9][a-zA-Z0-9_-]{0,62})\.([a-zA-Z_][a-zA-Z0-9_-]{0,127})\}`)

const cloudRefPrefix = "${cloud."

// CloudRefs lists the references in s, in order. A "${cloud." that does not
// form a reference is an error quoting it.
func CloudRefs(s string) ([]CloudRef, error) {
	if !strings.Contains(s, cloudRefPrefix) {
		return nil, nil
	}
	var refs []CloudRef
	for _, m := range cloudRefRE.FindAllStringSubmatch(s, -1) {
		refs = append(refs, CloudRef{Config: m[1], Output: m[2]})
	}
	if rest := cloudRefRE.ReplaceAllString(s, ""); strings.Contains(rest, cloudRefPrefix) {
		i := strings.Index(rest, cloudRefPrefix)
		bad := rest[i:]
		if j := strings.IndexByte(bad, '}'); j >= 0 {
			bad = bad[:j+1]
		} else if len(bad) > 40 {
			bad = bad[:40] + "..."
		}
		return refs, fmt.Errorf("%q is not a reference like ${cloud.NAME.OUTPUT}", bad)
	}
	return refs, nil
}

// ExpandCloudRefs replaces every reference in s with lookup's value. It
// returns the references lookup could not resolve; those stay as written.
func ExpandCloudRefs(s string, lookup func(CloudRef) (string, bool)) (string, []CloudRef) {
	if !strings.Contains(s, cloudRefPrefix) {
		return s, nil
	}
	var missing []CloudRef
	out := cloudRefRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := cloudRefRE.FindStringSubmatch(m)
		r := CloudRef{Config: sub[1], Output: sub[2]}
		if v, ok := lookup(r); ok {
			return v
		}
		missing = append(missing, r)
		return m
	})
	return out, missing
}

// CloudRefFields calls fn for every string field of the spec that may carry
// ${cloud...} references, with the field's path, the resource it belongs to,
// and a pointer through which the caller may rewrite it. The fields are
// container env values, command and args, file content and unit content.
func (s *Spec) CloudRefFields(fn func(path, id string, v *string)) {
	for i := range s.Containers {
		ct := &s.Containers[i]
		id := ResourceID("container", ct.Name)
		p := fmt.Sprintf("spec.containers[%d]", i)
		keys := make([]string, 0, len(ct.Env))
		for k := range ct.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			v := ct.Env[k]
			fn(p+".env."+k, id, &v)
			ct.Env[k] = v
		}
		for j := range ct.Command {
			fn(fmt.Sprintf("%s.command[%d]", p, j), id, &ct.Command[j])
		}
		for j := range ct.Args {
			fn(fmt.Sprintf("%s.args[%d]", p, j), id, &ct.Args[j])
		}
	}
	for i := range s.Files {
		fn(fmt.Sprintf("spec.files[%d].content", i), ResourceID("file", s.Files[i].Path), &s.Files[i].Content)
	}
	for i := range s.Units {
		fn(fmt.Sprintf("spec.units[%d].content", i), ResourceID("unit", s.Units[i].Name), &s.Units[i].Content)
	}
}

func (c *checker) cloud(cs []CloudConfig, ids map[string]string) {
	for i, cc := range cs {
		p := fmt.Sprintf("spec.cloud[%d]", i)
		c.name(p+".name", cc.Name)
		if cc.Name != "" && !cloudNameRE.MatchString(cc.Name) {
			c.add(p+".name", "%q is not a valid configuration name (letters, digits, _ and -; no dots)", cc.Name)
		}
		if (strings.TrimSpace(cc.Main) == "") == (cc.Module == nil) {
			c.add(p, "needs exactly one of main or module")
		}
		c.artifact(p+".module", cc.Module)
		c.oneOf(p+".drift", cc.Drift, DriftRepair, DriftReport)
		for k := range cc.Variables {
			if !tfIdentRE.MatchString(k) {
				c.add(p+".variables."+k, "%q is not a Terraform variable name", k)
			}
		}
		seen := map[string]bool{}
		for j, o := range cc.Outputs {
			op := fmt.Sprintf("%s.outputs[%d]", p, j)
			switch {
			case !tfIdentRE.MatchString(o):
				c.add(op, "%q is not a Terraform output name", o)
			case seen[o]:
				c.add(op, "%q is listed twice", o)
			}
			seen[o] = true
		}
		if cc.Name != "" {
			c.unique(ids, ResourceID("cloud", cc.Name), p+".name")
		}
	}
}

// cloudRefs checks every ${cloud.NAME.OUTPUT} against spec.cloud: the
// configuration must be declared and must list the output, so a typo fails
// validation instead of leaving a workload waiting forever.
func (c *checker) cloudRefs(s *Spec) {
	outputs := map[string]map[string]bool{}
	where := map[string]int{}
	for i, cc := range s.Cloud {
		outputs[cc.Name] = map[string]bool{}
		where[cc.Name] = i
		for _, o := range cc.Outputs {
			outputs[cc.Name][o] = true
		}
	}
	// CloudRefFields only reads here; it writes back the same values.
	s.CloudRefFields(func(p, _ string, v *string) {
		refs, err := CloudRefs(*v)
		if err != nil {
			c.add(p, "%v", err)
		}
		for _, r := range refs {
			outs, ok := outputs[r.Config]
			switch {
			case !ok:
				c.add(p, "%s refers to cloud configuration %q, which spec.cloud does not declare", r, r.Config)
			case !outs[r.Output]:
				c.add(p, "%s refers to output %q, which spec.cloud[%d].outputs does not list", r, r.Output, where[r.Config])
			}
		}
	})
}

// Exec features a Terraform configuration may use to run programs on the
// machine that runs Terraform. The hub refuses them unless its operator
// allows them for the tenant.
const (
	ExecLocal    = "local-exec"
	ExecRemote   = "remote-exec"
	ExecExternal = "external"
)

// execRE finds the exec features in Terraform source (HCL or JSON) once its
// escapes are decoded. Provisioner types and data source types are literal
// block labels in both syntaxes, so they cannot be computed at run time;
// matching any mention is deliberately broad (a comment naming local-exec is
// refused too) because a miss is worse than a false alarm. The hub checks
// again after init and plan with Terraform's own parser.
var execRE = regexp.MustCompile(`(?:local|remote)-exec|\bdata\s+"?external\b|"external"\s*:|\bprovider\s+"?external\b`)

// hclEscapeRE matches the escapes of HCL and JSON strings that could spell
// a name without its letters (local\u002dexec).
var hclEscapeRE = regexp.MustCompile(`\\u[0-9a-fA-F]{4}|\\U[0-9a-fA-F]{8}`)

// ExecUses lists the exec features src uses, each with its line, e.g.
// `local-exec (line 4)`. src is one Terraform file, HCL or JSON.
func ExecUses(src string) []string {
	text := hclEscapeRE.ReplaceAllStringFunc(src, func(m string) string {
		r, err := strconv.ParseUint(m[2:], 16, 32)
		if err != nil {
			return m
		}
		return string(rune(r))
	})
	var out []string
	for _, loc := range execRE.FindAllStringIndex(text, -1) {
		m := text[loc[0]:loc[1]]
		what := ExecExternal
		switch {
		case strings.Contains(m, ExecLocal):
			what = ExecLocal
		case strings.Contains(m, ExecRemote):
			what = ExecRemote
		}
		out = append(out, fmt.Sprintf("%s (line %d)", what, strings.Count(text[:loc[0]], "\n")+1))
	}
	return out
}
