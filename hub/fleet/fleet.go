// Package fleet renders one blueprint template for many nodes and signs the
// result, on the operator's machine.
//
// A fleet is a blueprint template, a label selector and parameters per site
// and per node. `alpha fleet apply` lists the tenant's nodes at the hub,
// renders the template for every node the selector matches, validates and
// signs each node's blueprint with the publisher key (which never leaves
// the operator), and stages the signed envelopes in the hub's staged
// bucket. The hub's rollout controller (package rollout) then only moves
// those bytes into the nodes' keys, batch by batch: the hub holds no key
// that can authorize a blueprint, and each node still verifies the
// publisher's signature over exactly what it applies.
package fleet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub/inventory"
	"github.com/alpha-edge/alpha/streams"
)

// Kind is the kind of a fleet document.
const Kind = "Fleet"

// Fleet is the document `alpha fleet apply` reads.
type Fleet struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names a fleet.
type Metadata struct {
	Name string `json:"name"`
}

// Spec is what a fleet declares.
type Spec struct {
	// Selector picks the nodes (inventory.ParseSelector syntax).
	Selector string `json:"selector"`
	// Template is the blueprint as a Go text/template; TemplateFile reads
	// it from a file relative to the fleet document instead.
	Template     string `json:"template,omitempty"`
	TemplateFile string `json:"templateFile,omitempty"`
	Params       Params `json:"params,omitempty"`
	Rollout      Policy `json:"rollout,omitempty"`
}

// Params are the template's .Params: Defaults, overridden by the node's
// site's entry, overridden by the node's own (key <site>.<node>).
type Params struct {
	Defaults map[string]string            `json:"defaults,omitempty"`
	Sites    map[string]map[string]string `json:"sites,omitempty"`
	Nodes    map[string]map[string]string `json:"nodes,omitempty"`
}

// Policy is how a fleet revision rolls out.
type Policy struct {
	// Batches are cumulative steps, each a percentage ("10%") or a count
	// ("5") of the fleet's nodes, the last one reaching all of them; or the
	// single word "site" for one site per batch. Default: one batch of all.
	Batches []string `json:"batches,omitempty"`
	// MinHealth, For and Deadline are the gate: a node passes when it
	// applied the revision and its solution health stayed >= MinHealth for
	// For, within Deadline of starting on it; otherwise it rolls itself
	// back. They become the blueprint's spec.rollback unless the template
	// sets one.
	MinHealth float64            `json:"minHealth,omitempty"`
	For       blueprint.Duration `json:"for,omitempty"`
	Deadline  blueprint.Duration `json:"deadline,omitempty"`
	// FailureBudget is how many nodes may fail before the rollout stops
	// (default 0: the first failure stops it).
	FailureBudget int `json:"failureBudget,omitempty"`
	// MaxPerSite is the disruption budget: at most this many nodes of one
	// site update at once (0: no limit).
	MaxPerSite int `json:"maxPerSite,omitempty"`
}

// DefaultDeadline is a rollout's deadline when the fleet sets none.
const DefaultDeadline = 5 * time.Minute

// Parse reads a fleet document strictly; dir resolves templateFile.
func Parse(data []byte, dir string) (*Fleet, error) {
	var f Fleet
	if err := blueprint.Decode(data, &f, "a fleet"); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if f.Spec.TemplateFile != "" {
		if f.Spec.Template != "" {
			return nil, fmt.Errorf("fleet %s: spec.template and spec.templateFile %q are exclusive", f.Metadata.Name, f.Spec.TemplateFile)
		}
		p := f.Spec.TemplateFile
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("fleet %s: spec.templateFile: %w", f.Metadata.Name, err)
		}
		f.Spec.Template = string(b)
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	if f.Spec.Rollout.Deadline.Duration == 0 {
		f.Spec.Rollout.Deadline.Duration = DefaultDeadline
	}
	return &f, nil
}

// Validate checks the fleet's own fields (the template is checked per node
// when rendered).
func (f *Fleet) Validate() error {
	var errs []string
	add := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if f.APIVersion != blueprint.APIVersion {
		add("apiVersion %q is not supported; use %q", f.APIVersion, blueprint.APIVersion)
	}
	if f.Kind != Kind {
		add("kind %q is not supported; use %q", f.Kind, Kind)
	}
	if err := streams.ValidID("fleet", f.Metadata.Name); err != nil {
		add("metadata.name: %v", err)
	}
	if _, err := inventory.ParseSelector(f.Spec.Selector); err != nil {
		add("spec.selector: %v", err)
	}
	if strings.TrimSpace(f.Spec.Template) == "" {
		add("spec.template (or spec.templateFile) is required")
	} else if _, err := f.parseTemplate(); err != nil {
		add("spec.template: %v", err)
	}
	for k := range f.Spec.Params.Nodes {
		site, node, ok := strings.Cut(k, ".")
		if !ok || streams.ValidID("site", site) != nil || streams.ValidID("node", node) != nil {
			add("spec.params.nodes: key %q is not SITE.NODE", k)
		}
	}
	if err := f.Spec.Rollout.validate(); err != nil {
		add("%v", err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("fleet %q: %s", f.Metadata.Name, strings.Join(errs, "; "))
	}
	return nil
}

func (p Policy) validate() error {
	if len(p.Batches) == 1 && p.Batches[0] == "site" {
		return p.gate()
	}
	for i, b := range p.Batches {
		if _, _, err := step(b); err != nil {
			return fmt.Errorf("spec.rollout.batches[%d]: %v", i, err)
		}
	}
	if n := len(p.Batches); n > 0 {
		if b := p.Batches[n-1]; b != "100%" {
			return fmt.Errorf("spec.rollout.batches[%d]: the last batch is %q; it must be \"100%%\" so the rollout reaches every node", n-1, b)
		}
	}
	if p.FailureBudget < 0 {
		return fmt.Errorf("spec.rollout.failureBudget: %d must not be negative", p.FailureBudget)
	}
	if p.MaxPerSite < 0 {
		return fmt.Errorf("spec.rollout.maxPerSite: %d must not be negative", p.MaxPerSite)
	}
	return p.gate()
}

func (p Policy) gate() error {
	if p.MinHealth < 0 || p.MinHealth > 1 {
		return fmt.Errorf("spec.rollout.minHealth: %v must be between 0 and 1", p.MinHealth)
	}
	if p.Deadline.Duration < 0 || p.For.Duration < 0 {
		return fmt.Errorf("spec.rollout: for %s and deadline %s must not be negative", p.For, p.Deadline)
	}
	if p.Deadline.Duration > 0 && p.For.Duration >= p.Deadline.Duration {
		return fmt.Errorf("spec.rollout.for: %s must be shorter than deadline %s", p.For, p.Deadline)
	}
	return nil
}

// step parses one batch step: a percentage ("10%") as a fraction, or a
// count ("5").
func step(s string) (frac float64, count int, err error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 || v > 100 {
			return 0, 0, fmt.Errorf("%q: a percentage must be in (0, 100]", s)
		}
		return v / 100, 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, 0, fmt.Errorf("%q: want a percentage (10%%), a positive count (5) or \"site\"", s)
	}
	return 0, n, nil
}

// Plan splits keys (sorted <site>.<node>) into the policy's batches.
// Steps are cumulative; a step that adds no node is skipped, and each batch
// has at least one node.
func (p Policy) Plan(keys []string) [][]string {
	if len(keys) == 0 {
		return nil
	}
	if len(p.Batches) == 1 && p.Batches[0] == "site" {
		var out [][]string
		last := ""
		for _, k := range keys {
			site, _, _ := strings.Cut(k, ".")
			if site != last || len(out) == 0 {
				out = append(out, nil)
				last = site
			}
			out[len(out)-1] = append(out[len(out)-1], k)
		}
		return out
	}
	steps := p.Batches
	if len(steps) == 0 {
		steps = []string{"100%"}
	}
	var out [][]string
	done := 0
	for _, s := range steps {
		frac, count, _ := step(s)
		upto := count
		if count == 0 {
			upto = int(frac*float64(len(keys)) + 0.999999)
		}
		upto = min(max(upto, done+1), len(keys))
		if upto > done {
			out = append(out, keys[done:upto])
			done = upto
		}
	}
	if done < len(keys) {
		out = append(out, keys[done:])
	}
	return out
}

// Data is what a node's template sees.
type Data struct {
	Site, Node string
	// Labels are the node's labels as selectors see them (facts under
	// facts., site and node included).
	Labels map[string]string
	Params map[string]string
}

func (f *Fleet) parseTemplate() (*template.Template, error) {
	// missingkey=error: a parameter a node lacks is an error naming it,
	// never an empty string in a running configuration.
	return template.New(f.Metadata.Name).Option("missingkey=error").Parse(f.Spec.Template)
}

// Params of one node: defaults < site < node.
func (f *Fleet) params(site, node string) map[string]string {
	out := maps.Clone(f.Spec.Params.Defaults)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, f.Spec.Params.Sites[site])
	maps.Copy(out, f.Spec.Params.Nodes[streams.Key(site, node)])
	return out
}

// Render renders, parses and validates the node's blueprint and sets its
// rollback guard and fleet annotations. The result is the blueprint as
// JSON (a YAML document too), the exact bytes that get signed.
func (f *Fleet) Render(n inventory.Node, generation string) ([]byte, error) {
	tpl, err := f.parseTemplate()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	d := Data{Site: n.Site, Node: n.Node, Labels: n.All(), Params: f.params(n.Site, n.Node)}
	if err := tpl.Execute(&buf, d); err != nil {
		return nil, fmt.Errorf("node %s: %v", n.Key(), err)
	}
	bp, err := blueprint.Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("node %s: rendered blueprint: %w", n.Key(), err)
	}
	if bp.Spec.Rollback == nil {
		p := f.Spec.Rollout
		bp.Spec.Rollback = &blueprint.Rollback{MinHealth: p.MinHealth, For: p.For, Deadline: p.Deadline}
	}
	if bp.Metadata.Annotations == nil {
		bp.Metadata.Annotations = map[string]string{}
	}
	bp.Metadata.Annotations[AnnotationFleet] = f.Metadata.Name
	bp.Metadata.Annotations[AnnotationGeneration] = generation
	out, err := json.Marshal(bp)
	if err != nil {
		return nil, err
	}
	// What is signed must parse to the same blueprint at the node.
	back, err := blueprint.Parse(out)
	if err != nil {
		return nil, fmt.Errorf("node %s: blueprint with rollback guard: %w", n.Key(), err)
	}
	if back.Hash() != bp.Hash() {
		return nil, fmt.Errorf("node %s: blueprint changed in encoding", n.Key())
	}
	return out, nil
}

// Annotations `alpha fleet apply` sets on every node's blueprint.
const (
	AnnotationFleet      = "alpha.fleet"
	AnnotationGeneration = "alpha.fleet.generation"
)

// Staged is one node's signed blueprint, ready for the staged bucket.
type Staged struct {
	Key      string // <site>.<node>
	Envelope []byte
}

// Meta is the staged bucket's entry under the fleet's own name: what
// `alpha rollout start` needs to plan.
type Meta struct {
	Fleet      string    `json:"fleet"`
	Generation string    `json:"generation"`
	Selector   string    `json:"selector"`
	Nodes      []string  `json:"nodes"` // <site>.<node>, sorted
	Policy     Policy    `json:"policy"`
	Applied    time.Time `json:"applied"`
	Signer     string    `json:"signer"`
}

// Build renders and signs the fleet for nodes. Every node's error is
// reported (all of them, one per line), and nothing is returned then.
func (f *Fleet) Build(nodes []inventory.Node, seed []byte, now time.Time) (Meta, []Staged, error) {
	gen := strconv.FormatInt(now.UTC().UnixNano(), 10)
	meta := Meta{Fleet: f.Metadata.Name, Generation: gen, Selector: f.Spec.Selector, Policy: f.Spec.Rollout, Applied: now.UTC()}
	var out []Staged
	var errs []string
	for _, n := range nodes {
		bp, err := f.Render(n, gen)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		env, err := sign.Sign(seed, n.Key(), 0, bp)
		if err != nil {
			return meta, nil, err
		}
		out = append(out, Staged{Key: n.Key(), Envelope: env})
		meta.Nodes = append(meta.Nodes, n.Key())
	}
	if len(errs) > 0 {
		return meta, nil, fmt.Errorf("fleet %s: %d of %d node(s) did not render:\n  %s", f.Metadata.Name, len(errs), len(nodes), strings.Join(errs, "\n  "))
	}
	if len(out) == 0 {
		return meta, nil, fmt.Errorf("fleet %s: selector %q matches no node", f.Metadata.Name, f.Spec.Selector)
	}
	if pub, err := signer(seed); err == nil {
		meta.Signer = pub
	}
	return meta, out, nil
}

// StagedKey is a node's key in the staged bucket.
func StagedKey(fleet, node string) string { return fleet + "." + node }
