package cloud

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/terraform-exec/tfexec"
	tfjson "github.com/hashicorp/terraform-json"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/blueprint"
)

// File names inside a working directory.
const (
	stateFile = "terraform.tfstate"
	varsFile  = "alpha.tfvars.json"
	planFile  = "alpha.tfplan"
)

// ErrTerraformMissing is wrapped when no usable Terraform binary is found.
var ErrTerraformMissing = errors.New("terraform is not available")

// minTerraform is the oldest Terraform whose terraform_data and plan file
// handling this package relies on.
var minTerraform = [2]int{1, 5}

// applied is what the state store keeps beside the state: the configuration
// last applied, so destroy runs with it (destroy provisioners and provider
// settings live in the configuration, not in the state).
type applied struct {
	Config blueprint.CloudConfig `json:"config"`
	Digest string                `json:"digest"`
	At     time.Time             `json:"at"`
}

// terraformReady resolves the binary, checking its version once per path.
// A missing binary is logged once, and again only after it was found.
func (r *Reconciler) terraformReady(ctx context.Context) error {
	r.tfMu.Lock()
	defer r.tfMu.Unlock()
	path, err := exec.LookPath(r.cfg.Terraform)
	if err == nil && path != r.tfPath {
		err = checkVersion(ctx, r.cfg.WorkDir, path)
		if err == nil && r.cfg.Confine != nil {
			r.tfExec, err = r.wrapper(path)
		} else {
			r.tfExec = path
		}
	}
	if err != nil {
		err = fmt.Errorf("%w: %q: %v; cloud configurations are not provisioned until it is installed (on the hub: .ci/setup-terraform.sh, or set the terraform path)", ErrTerraformMissing, r.cfg.Terraform, err)
		if !r.tfMissing {
			r.log.Error("terraform missing; cloud configurations will be marked failed, the rest of Alpha runs", "err", err)
			r.tfMissing = true
		}
		r.tfPath = ""
		return err
	}
	if r.tfMissing {
		r.log.Info("terraform found", "path", path)
		r.tfMissing = false
	}
	r.tfPath = path
	return nil
}

func checkVersion(ctx context.Context, dir, path string) error {
	tf, err := tfexec.NewTerraform(dir, path)
	if err != nil {
		return err
	}
	v, _, err := tf.Version(ctx, true)
	if err != nil {
		return fmt.Errorf("running %s version: %v", path, err)
	}
	seg := v.Segments()
	if len(seg) < 2 || seg[0] < minTerraform[0] || (seg[0] == minTerraform[0] && seg[1] < minTerraform[1]) {
		return fmt.Errorf("%s is version %s; need %d.%d or newer", path, v, minTerraform[0], minTerraform[1])
	}
	return nil
}

func (r *Reconciler) terraform(dir string) (*tfexec.Terraform, error) {
	r.tfMu.Lock()
	path := r.tfExec
	r.tfMu.Unlock()
	tf, err := tfexec.NewTerraform(dir, path)
	if err != nil {
		return nil, err
	}
	if err := tf.SetEnv(tfexec.CleanEnv(r.scrubbedEnv(dir))); err != nil {
		return nil, err
	}
	return tf, nil
}

// status reads a configuration's published status; zero when there is none.
func (r *Reconciler) readStatus(ctx context.Context, key string) (Status, bool, error) {
	e, err := r.status.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Status{}, false, nil
	}
	if err != nil {
		return Status{}, false, err
	}
	st, err := r.decodeStatus(key, e.Value())
	if err != nil {
		// Not ours (forged, or from before signing): rewritten below, from
		// the newest value that is.
		r.log.Warn("cloud status not published by this hub; it will be rewritten", "key", key, "revision", e.Revision(), "err", err)
		return r.lastOwnStatus(ctx, key)
	}
	return st, true, nil
}

// publisher writes a configuration's status only when it says something new,
// so a quiet re-plan does not wake every agent of the site.
type publisher struct {
	r    *Reconciler
	key  string
	last Status
	had  bool
}

func (p *publisher) put(ctx context.Context, st Status) error {
	if p.had && same(st, p.last) {
		return nil
	}
	st.Hub, st.Updated = p.r.cfg.Instance, time.Now().UTC()
	data, err := p.r.encodeStatus(p.key, st)
	if err != nil {
		return err
	}
	if _, err := p.r.status.Put(ctx, p.key, data); err != nil {
		return fmt.Errorf("publishing status of %s: %w", p.key, err)
	}
	p.last, p.had = st, true
	return nil
}

func (r *Reconciler) publisher(ctx context.Context, w *worker) (*publisher, Status, error) {
	st, ok, err := r.readStatus(ctx, w.key)
	if err != nil {
		return nil, st, err
	}
	st.Site, st.Node, st.Config = w.site, w.node, w.name
	return &publisher{r: r, key: w.key, last: st, had: ok}, st, nil
}

// claim takes the configuration's lease, so one hub of a cluster works on
// it, then a slot of the hub's concurrent Terraform runs; release gives back
// both.
func (r *Reconciler) claim(ctx context.Context, key string) (release func(), err error) {
	l, err := r.acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	select {
	case r.sem <- struct{}{}:
	case <-ctx.Done():
		l.release()
		return nil, ctx.Err()
	}
	return func() {
		<-r.sem
		l.release()
	}, nil
}

// reconcile brings one configuration to its desired revision.
func (r *Reconciler) reconcile(ctx context.Context, w *worker, want blueprint.CloudConfig) error {
	pub, st, err := r.publisher(ctx, w)
	if err != nil {
		return err
	}
	st.Drift = want.Drift
	if st.Drift == "" {
		st.Drift = blueprint.DriftReport
	}
	digest := want.Digest()
	fail := func(err error) error {
		if ctx.Err() != nil {
			return err // shutting down: not a failure of the configuration
		}
		st.Phase, st.Error, st.Digest = PhaseFailed, err.Error(), digest
		st.Message = ""
		if perr := pub.put(ctx, st); perr != nil {
			return errors.Join(err, perr)
		}
		return err
	}
	if err := r.terraformReady(ctx); err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	release, err := r.claim(ctx, w.key)
	if err != nil {
		return err
	}
	defer release()
	// Another hub may have worked on it while this one waited.
	if fresh, ok, err := r.readStatus(ctx, w.key); err == nil && ok {
		st.Applies, st.Repairs, st.Applied, st.Outputs, st.AppliedDigest = fresh.Applies, fresh.Repairs, fresh.Applied, fresh.Outputs, fresh.AppliedDigest
		pub.last, pub.had = fresh, true
		pub.last.Site, pub.last.Node, pub.last.Config = w.site, w.node, w.name
	}
	last, err := r.loadApplied(ctx, w.key)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: reading applied configuration: %w", w.name, err))
	}
	dir, root, err := r.prepare(ctx, w.key, want)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	defer root.Close()
	tf, err := r.terraform(dir)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	tctx, cancel := r.runContext(ctx)
	defer cancel()
	if err := tf.Init(tctx, tfexec.Upgrade(false)); err != nil {
		return fail(tfError(w.name, "init", err))
	}
	if err := r.checkInstalled(root, w.name); err != nil {
		return fail(err)
	}
	r.plans.Add(1)
	changes, err := tf.Plan(tctx, tfexec.Out(planFile), tfexec.VarFile(varsFile))
	if err != nil {
		return fail(tfError(w.name, "plan", err))
	}
	plan, err := tf.ShowPlanFile(tctx, planFile)
	if err != nil {
		return fail(tfError(w.name, "show", err))
	}
	if err := r.checkPlan(plan, w.name); err != nil {
		return fail(err)
	}
	sum := countActions(plan)
	st.Plan, st.Digest = sum, digest
	if !changes {
		if last == nil || last.Digest != digest {
			// A revision that changes nothing in the cloud is applied as is.
			if err := r.saveApplied(ctx, w.key, want); err != nil {
				return fail(fmt.Errorf("configuration %q: %w", w.name, err))
			}
		}
		return r.publishOutputs(ctx, tf, pub, st, want, digest)
	}
	drift := last != nil && last.Digest == digest
	if drift && want.Drift != blueprint.DriftRepair {
		st.Phase, st.Error = PhaseDrifted, ""
		st.Message = fmt.Sprintf("cloud drift: the plan wants %s; policy report leaves it", sum)
		if !pub.had || pub.last.Phase != PhaseDrifted {
			r.log.Warn("cloud drift reported", "key", w.key, "plan", sum.String())
		}
		return pub.put(ctx, st)
	}
	msg := "applying revision " + short(digest)
	if drift {
		msg = "repairing cloud drift"
		r.log.Warn("cloud drift; repairing", "key", w.key, "plan", sum.String())
	}
	st.Error, st.Message = "", msg
	st.Phase = PhasePlanned
	if err := pub.put(ctx, st); err != nil {
		return err
	}
	st.Phase = PhaseApplying
	if err := pub.put(ctx, st); err != nil {
		return err
	}
	r.applies.Add(1)
	aerr := tf.Apply(tctx, tfexec.DirOrPlan(planFile))
	// Save state whatever apply said: a partial apply created real things.
	if err := r.saveState(ctx, w.key, root); err != nil {
		return fail(fmt.Errorf("configuration %q: saving terraform state: %w", w.name, errors.Join(err, aerr)))
	}
	if aerr != nil {
		return fail(tfError(w.name, "apply", aerr))
	}
	if err := r.saveApplied(ctx, w.key, want); err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	st.Applies++
	st.Applied = sum
	if drift {
		st.Repairs++
	}
	r.log.Info("cloud configuration applied", "key", w.key, "plan", sum.String(), "repair", drift)
	return r.publishOutputs(ctx, tf, pub, st, want, digest)
}

// publishOutputs reads the outputs the configuration lists and publishes
// them. A listed output the configuration does not declare is an error.
func (r *Reconciler) publishOutputs(ctx context.Context, tf *tfexec.Terraform, pub *publisher, st Status, want blueprint.CloudConfig, digest string) error {
	outs, err := tf.Output(ctx)
	if err != nil {
		st.Phase, st.Error = PhaseFailed, tfError(want.Name, "output", err).Error()
		return errors.Join(errors.New(st.Error), pub.put(ctx, st))
	}
	st.Outputs = map[string]string{}
	var missing []string
	for _, name := range want.Outputs {
		o, ok := outs[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		st.Outputs[name] = outputText(o.Value)
	}
	if len(st.Outputs) == 0 {
		st.Outputs = nil
	}
	st.AppliedDigest, st.Digest = digest, digest
	st.Phase, st.Error, st.Message = PhaseApplied, "", ""
	if len(missing) > 0 {
		st.Phase = PhaseFailed
		st.Error = fmt.Sprintf("configuration %q declares no output %s, yet its outputs list names it", want.Name, quoteAll(missing))
	}
	if err := pub.put(ctx, st); err != nil {
		return err
	}
	if len(missing) > 0 {
		return errors.New(st.Error)
	}
	return nil
}

// destroy removes a configuration that left every blueprint, using the
// configuration it was last applied with.
func (r *Reconciler) destroy(ctx context.Context, w *worker) error {
	pub, st, err := r.publisher(ctx, w)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		if ctx.Err() != nil {
			return err
		}
		st.Phase, st.Error = PhaseFailed, err.Error()
		return errors.Join(err, pub.put(ctx, st))
	}
	last, err := r.loadApplied(ctx, w.key)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: reading applied configuration: %w", w.name, err))
	}
	hasState, err := r.hasObject(ctx, w.key+"/"+stateFile)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	done := func() error {
		st.Phase, st.Error, st.Outputs, st.AppliedDigest = PhaseDestroyed, "", nil, ""
		st.Plan, st.Message = PlanSummary{}, "removed from the blueprint"
		if !pub.had {
			return nil // never published: nothing to tell
		}
		return pub.put(ctx, st)
	}
	if last == nil && !hasState {
		return done()
	}
	if err := r.terraformReady(ctx); err != nil {
		return fail(fmt.Errorf("configuration %q cannot be destroyed: %w", w.name, err))
	}
	release, err := r.claim(ctx, w.key)
	if err != nil {
		return err
	}
	defer release()
	cfg := blueprint.CloudConfig{Name: w.name, Main: "# configuration unknown: destroying what the state holds\n"}
	if last != nil {
		cfg = last.Config
	}
	st.Phase, st.Error, st.Message = PhaseDestroying, "", "removed from the blueprint"
	if err := pub.put(ctx, st); err != nil {
		return err
	}
	dir, root, err := r.prepare(ctx, w.key, cfg)
	if err != nil {
		return fail(fmt.Errorf("configuration %q: %w", w.name, err))
	}
	defer root.Close()
	tf, err := r.terraform(dir)
	if err != nil {
		return fail(err)
	}
	tctx, cancel := r.runContext(ctx)
	defer cancel()
	if err := tf.Init(tctx, tfexec.Upgrade(false)); err != nil {
		return fail(tfError(w.name, "init", err))
	}
	if err := r.checkInstalled(root, w.name); err != nil {
		return fail(err)
	}
	derr := tf.Destroy(tctx, tfexec.VarFile(varsFile))
	if err := r.saveState(ctx, w.key, root); err != nil {
		return fail(fmt.Errorf("configuration %q: saving terraform state: %w", w.name, errors.Join(err, derr)))
	}
	if derr != nil {
		return fail(tfError(w.name, "destroy", derr))
	}
	r.destroys.Add(1)
	for _, name := range []string{w.key + "/" + stateFile, w.key + "/applied.json"} {
		if err := r.state.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			return fail(fmt.Errorf("configuration %q: deleting %s: %w", w.name, name, err))
		}
	}
	_ = os.RemoveAll(dir)
	r.log.Info("cloud configuration destroyed", "key", w.key)
	pub.had = true
	return done()
}

// prepare lays out the working directory for cfg and restores its state
// from the store. .terraform (providers, modules) is kept between runs.
//
// Every file operation goes through the directory's os.Root: under
// confinement the directory belongs to Terraform's user, and the hub runs as
// root. The caller closes the root. Provisioners and the external data
// source are refused here, before Terraform runs, unless allowed.
func (r *Reconciler) prepare(ctx context.Context, key string, cfg blueprint.CloudConfig) (string, *os.Root, error) {
	dir, root, err := r.runDir(key)
	if err != nil {
		return "", nil, err
	}
	if err := r.layOut(ctx, root, key, cfg); err != nil {
		root.Close()
		return "", nil, err
	}
	return dir, root, nil
}

func (r *Reconciler) layOut(ctx context.Context, root *os.Root, key string, cfg blueprint.CloudConfig) error {
	ents, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if e.Name() == ".terraform" || e.Name() == ".terraform.lock.hcl" {
			continue
		}
		if err := root.RemoveAll(e.Name()); err != nil {
			return err
		}
	}
	if cfg.Module != nil {
		if err := r.fetchModule(ctx, cfg.Module, root); err != nil {
			return err
		}
	} else if err := root.WriteFile("main.tf", []byte(cfg.Main), 0o600); err != nil {
		return err
	}
	if err := r.checkExec(root); err != nil {
		return err
	}
	vars := cfg.Variables
	if vars == nil {
		vars = map[string]string{}
	}
	data, _ := json.Marshal(vars)
	if err := root.WriteFile(varsFile, data, 0o600); err != nil {
		return err
	}
	state, err := r.state.GetBytes(ctx, key+"/"+stateFile)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
	case err != nil:
		return fmt.Errorf("restoring terraform state: %w", err)
	default:
		if err := root.WriteFile(stateFile, state, 0o600); err != nil {
			return err
		}
	}
	return r.handOver(root)
}

// saveState stores the working dir's state. It runs even when ctx is done:
// a run interrupted by shutdown still created real things, and losing their
// state would make the next run create them twice.
func (r *Reconciler) saveState(ctx context.Context, key string, root *os.Root) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	data, err := readLimited(root, stateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if old, err := r.state.GetBytes(ctx, key+"/"+stateFile); err == nil && bytes.Equal(old, data) {
		return nil
	}
	_, err = r.state.PutBytes(ctx, key+"/"+stateFile, data)
	return err
}

func (r *Reconciler) loadApplied(ctx context.Context, key string) (*applied, error) {
	data, err := r.state.GetBytes(ctx, key+"/applied.json")
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var a applied
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("%s/applied.json: %w", key, err)
	}
	return &a, nil
}

func (r *Reconciler) saveApplied(ctx context.Context, key string, cfg blueprint.CloudConfig) error {
	data, _ := json.Marshal(applied{Config: cfg, Digest: cfg.Digest(), At: time.Now().UTC()})
	if _, err := r.state.PutBytes(ctx, key+"/applied.json", data); err != nil {
		return fmt.Errorf("saving applied configuration: %w", err)
	}
	return nil
}

func (r *Reconciler) hasObject(ctx context.Context, name string) (bool, error) {
	_, err := r.state.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	return err == nil, err
}

// countActions counts the saved plan's actions the way Terraform's "Plan: N
// to add, N to change, N to destroy" line does.
func countActions(p *tfjson.Plan) PlanSummary {
	var s PlanSummary
	for _, rc := range p.ResourceChanges {
		if rc.Change == nil {
			continue
		}
		a := rc.Change.Actions
		switch {
		case a.Replace():
			s.Add++
			s.Destroy++
		case a.Create():
			s.Add++
		case a.Update():
			s.Change++
		case a.Delete():
			s.Destroy++
		}
	}
	return s
}

var blankLines = regexp.MustCompile(`\n{3,}`)

// tfError keeps Terraform's own message (its stderr), without the exec
// status line, and names the configuration and the step.
func tfError(config, step string, err error) error {
	// terraform-exec's error for a cancelled run may hold a nil error whose
	// Error() panics; it answers errors.Is for the context errors.
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("configuration %q: terraform %s stopped: it ran longer than the hub's limit for one run (--cloud-timeout)", config, step)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("configuration %q: terraform %s interrupted: %w", config, step, context.Canceled)
	}
	msg := err.Error()
	if first, rest, ok := strings.Cut(msg, "\n"); ok && strings.HasPrefix(first, "exit status") {
		msg = rest
	}
	msg = blankLines.ReplaceAllString(strings.TrimSpace(msg), "\n\n")
	if len(msg) > 4000 {
		msg = msg[:4000] + "\n[truncated]"
	}
	return fmt.Errorf("configuration %q: terraform %s failed: %s", config, step, msg)
}

// outputText renders an output for substitution into strings: strings as
// they are, anything else as JSON.
func outputText(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s
	}
	return string(raw)
}

func quoteAll(names []string) string {
	sort.Strings(names)
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}
