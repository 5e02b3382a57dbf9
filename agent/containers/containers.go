// Package containers is the agent driver for spec.containers: containers run
// through podman's REST API, labelled as the agent's own, replaced when their
// spec hash changes and brought back when stopped or removed by hand.
package containers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"
	"github.com/containers/podman/v5/pkg/bindings/images"
	"github.com/containers/podman/v5/pkg/specgen"
	spec "github.com/opencontainers/runtime-spec/specs-go"
	"go.podman.io/image/v5/manifest"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/throttle"
)

// Labels the agent puts on every container it creates. Only containers with
// LabelManaged=true are ever changed or removed.
const (
	LabelManaged  = "alpha.managed"
	LabelSpecHash = "alpha.spec-hash"
	LabelName     = "alpha.name"
)

// DefaultURI is rootful podman's API socket.
const DefaultURI = "unix:///run/podman/podman.sock"

// hashVersion changes when the way a spec becomes a container changes, so
// every container is replaced once by an agent that creates them differently.
const hashVersion = "containers/v1"

// Config builds a Driver.
type Config struct {
	// URI of podman's API, e.g. DefaultURI or a test's private socket.
	URI string
	// Env.Root prefixes mount sources (as the files driver prefixes paths);
	// Env.Log is the logger.
	Env driver.Env
	// Artifacts provides image archives; nil fails containers that name one.
	Artifacts artifacts.Fetcher
}

// Driver manages spec.containers. Plan may be called any number of times with
// the same blueprint; applying its changes twice is harmless.
type Driver struct {
	cfg Config
	log *slog.Logger

	mu       sync.Mutex
	conn     context.Context       // bindings connection, nil until connected
	wanted   []blueprint.Container // from the last Plan, for Report
	created  map[string]string     // name -> spec hash seen running, to tell repairs from creations
	repairs  map[string]uint64     // name -> drift repairs made
	errs     map[string]string     // name -> last apply error
	throttle *throttle.Throttle
	retry    *throttle.Retry   // spaces restarts of a container that keeps exiting
	loaded   map[string]string // artifact sha256 -> image reference it loaded
}

var (
	_ driver.Driver   = (*Driver)(nil)
	_ driver.Watcher  = (*Driver)(nil)
	_ driver.Reporter = (*Driver)(nil)
)

// New builds the driver; it connects to podman lazily, so an agent that
// starts before podman does still starts.
func New(cfg Config) *Driver {
	if cfg.URI == "" {
		cfg.URI = DefaultURI
	}
	if cfg.Env.Root == "" {
		cfg.Env.Root = "/"
	}
	if cfg.Env.Log == nil {
		cfg.Env.Log = slog.Default()
	}
	return &Driver{cfg: cfg, log: cfg.Env.Log.With("driver", "containers"),
		created: map[string]string{}, repairs: map[string]uint64{}, errs: map[string]string{}, loaded: map[string]string{}, throttle: newThrottle(),
		retry: throttle.NewRetry(time.Second, 5*time.Minute, time.Minute)}
}

// Root is the directory mount sources are relative to.
func (d *Driver) Root() string { return d.cfg.Env.Root }

// Name is the blueprint section.
func (d *Driver) Name() string { return "containers" }

// withConn returns ctx carrying the podman connection: the bindings keep
// their client in a context value, while cancellation must follow ctx.
func (d *Driver) withConn(ctx context.Context) (context.Context, error) {
	d.mu.Lock()
	conn := d.conn
	d.mu.Unlock()
	if conn == nil {
		// No socket, no podman: say so at once rather than after the
		// bindings' connection retries (600 ms on every pass of a node
		// that runs no containers).
		if path, ok := strings.CutPrefix(d.cfg.URI, "unix://"); ok {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("podman at %s: %w", d.cfg.URI, err)
			}
		}
		// The connection context only carries the client (see merged); the
		// timeout bounds the ping a hung service would never answer.
		pingCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := bindings.NewConnection(pingCtx, d.cfg.URI)
		if err != nil {
			return nil, fmt.Errorf("podman at %s: %w", d.cfg.URI, err)
		}
		d.mu.Lock()
		d.conn, conn = c, c
		d.mu.Unlock()
	}
	return merged{ctx, conn}, nil
}

// merged takes cancellation and deadline from the caller's context and
// values from both, so a call carries the podman client without inheriting
// the connection context's lifetime.
type merged struct {
	context.Context
	values context.Context
}

func (m merged) Value(k any) any {
	if v := m.Context.Value(k); v != nil {
		return v
	}
	return m.values.Value(k)
}

// observed is one owned container as podman reports it.
type observed struct {
	id       string
	hash     string
	state    string // running, exited, created, ...
	exitCode int32
}

// SpecHash is the digest a container is labelled with; a different hash
// means the container must be replaced. dependsOn is left out: it orders
// changes, it does not change the container.
func SpecHash(c blueprint.Container) string {
	c.DependsOn = nil
	b, _ := json.Marshal(c)
	sum := sha256.Sum256(append([]byte(hashVersion+"\n"), b...))
	return hex.EncodeToString(sum[:])
}

// Plan lists the containers labelled as the agent's and compares them with
// the blueprint.
func (d *Driver) Plan(ctx context.Context, bp *blueprint.Blueprint) (driver.Plan, error) {
	d.mu.Lock()
	d.wanted = append([]blueprint.Container(nil), bp.Spec.Containers...)
	d.mu.Unlock()
	obs, err := d.observe(ctx)
	if err != nil {
		if len(bp.Spec.Containers) == 0 {
			// A node without podman and without containers is fine; if
			// podman is only down, its containers are removed once it is
			// back.
			d.log.Debug("podman unreachable; no containers wanted", "err", err)
			return nil, nil
		}
		return nil, err
	}
	now := time.Now()
	d.mu.Lock()
	for _, c := range bp.Spec.Containers {
		if o, ok := obs[c.Name]; ok && o.hash == SpecHash(c) && o.state == "running" {
			d.created[c.Name] = o.hash
			d.retry.Up(c.Name, now)
		}
	}
	created := make(map[string]string, len(d.created))
	for k, v := range d.created {
		created[k] = v
	}
	d.mu.Unlock()
	var plan driver.Plan
	byName := map[string]blueprint.Container{}
	for _, c := range bp.Spec.Containers {
		byName[c.Name] = c
	}
	for _, ch := range diff(bp.Spec.Containers, obs, created) {
		if ch.act == actStart && ch.repair {
			// A container that keeps exiting is restarted with growing
			// pauses, not in a tight loop; Report calls it restarting.
			if next := d.retry.Next(ch.name); now.Before(next) {
				d.retry.WakeAt(ch.name, next, "containers: restart backoff of "+ch.name+" over")
				continue
			}
		}
		plan = append(plan, d.bind(ch, byName[ch.name]))
	}
	return plan, nil
}

func (d *Driver) observe(ctx context.Context) (map[string]observed, error) {
	cctx, err := d.withConn(ctx)
	if err != nil {
		return nil, err
	}
	list, err := containers.List(cctx, new(containers.ListOptions).WithAll(true).
		WithFilters(map[string][]string{"label": {LabelManaged + "=true"}}))
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	obs := map[string]observed{}
	for _, c := range list {
		name := c.Labels[LabelName]
		if name == "" && len(c.Names) > 0 {
			name = c.Names[0]
		}
		obs[name] = observed{id: c.ID, hash: c.Labels[LabelSpecHash], state: c.State, exitCode: c.ExitCode}
	}
	return obs, nil
}

// action is what a change does to one container.
type action int

const (
	actCreate  action = iota // create and start
	actReplace               // remove the old one, create and start
	actStart                 // start the existing one
	actRemove                // remove
)

// change is a pure description of what to do with one container.
type change struct {
	name   string
	act    action
	op     driver.Op
	detail string
	repair bool   // brings back what the agent had already made
	id     string // the observed container's full id, for start, replace, remove
}

// diff compares desired and observed containers; it does no I/O.
func diff(want []blueprint.Container, obs map[string]observed, created map[string]string) []change {
	var out []change
	names := map[string]bool{}
	for _, c := range want {
		names[c.Name] = true
		h := SpecHash(c)
		o, ok := obs[c.Name]
		switch {
		case !ok:
			out = append(out, change{c.Name, actCreate, driver.Create, "missing", created[c.Name] == h, ""})
		case o.hash != h:
			out = append(out, change{c.Name, actReplace, driver.Update, "spec changed", false, o.id})
		case o.state == "running" || o.state == "paused" || o.state == "stopping":
		case o.state == "created" || o.state == "configured" || o.state == "initialized":
			out = append(out, change{c.Name, actStart, driver.Update, "created, not running", false, o.id})
		case wantsRunning(c.Restart, o.exitCode):
			out = append(out, change{c.Name, actStart, driver.Update, fmt.Sprintf("%s (exit code %d)", o.state, o.exitCode), true, o.id})
		}
	}
	for name, o := range obs {
		if !names[name] {
			out = append(out, change{name, actRemove, driver.Delete, "left the blueprint", false, o.id})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// wantsRunning applies the restart policy to a container that is not
// running: "always" (the default) always comes back, even after a stop by
// hand; "on-failure" only after a non-zero exit; "no" never.
func wantsRunning(policy string, exitCode int32) bool {
	switch policy {
	case "no":
		return false
	case "on-failure":
		return exitCode != 0
	default:
		return true
	}
}

func (d *Driver) bind(c change, want blueprint.Container) driver.Change {
	id := blueprint.ResourceID("container", c.name)
	return driver.NewChange(id, c.op, c.detail, func(ctx context.Context) error {
		err := d.apply(ctx, c, want)
		d.mu.Lock()
		defer d.mu.Unlock()
		if err != nil {
			d.errs[c.name] = err.Error()
			return err
		}
		delete(d.errs, c.name)
		if c.repair {
			d.repairs[c.name]++
		}
		if c.act == actStart {
			d.retry.Restarted(c.name, time.Now())
		}
		if c.act == actRemove {
			delete(d.created, c.name)
			delete(d.repairs, c.name)
			d.retry.Forget(c.name)
		} else {
			d.created[c.name] = SpecHash(want)
		}
		return nil
	})
}

func (d *Driver) apply(ctx context.Context, c change, want blueprint.Container) error {
	cctx, err := d.withConn(ctx)
	if err != nil {
		return err
	}
	switch c.act {
	case actRemove:
		return d.remove(cctx, c.name, c.id)
	case actStart:
		return d.start(cctx, c.name, c.id)
	}
	// Make sure the new container can be created before the old one goes:
	// a bad image or a missing device leaves the old one running.
	if err := d.image(cctx, want); err != nil {
		return err
	}
	s, err := d.specgen(want)
	if err != nil {
		return err
	}
	if c.act == actReplace {
		if err := d.remove(cctx, c.name, c.id); err != nil {
			return err
		}
	}
	resp, err := containers.CreateWithSpec(cctx, s, nil)
	if err != nil {
		return fmt.Errorf("container %q: create: %w", want.Name, err)
	}
	return d.start(cctx, c.name, resp.ID)
}

// start and remove act on a container by its full id, never by name: podman
// resolves a name it does not know as an id prefix, so "b" could reach some
// other container whose id starts with b.
func (d *Driver) start(ctx context.Context, name, id string) error {
	if err := containers.Start(ctx, id, nil); err != nil {
		return fmt.Errorf("container %q: start: %w", name, err)
	}
	return nil
}

func (d *Driver) remove(ctx context.Context, name, id string) error {
	reps, err := containers.Remove(ctx, id, new(containers.RemoveOptions).WithForce(true).WithIgnore(true).WithTimeout(5))
	if err != nil {
		return fmt.Errorf("container %q: remove: %w", name, err)
	}
	for _, r := range reps {
		if r.Err != nil {
			return fmt.Errorf("container %q: remove: %w", name, r.Err)
		}
	}
	// podman can answer before a container it was restarting is gone; the
	// next pass must not see it and call the blueprint converged.
	if ok, err := containers.Exists(ctx, id, nil); err == nil && ok {
		return fmt.Errorf("container %q: still present after remove", name)
	}
	return nil
}

// image makes want.Image present: loaded from its artifact archive, or pulled.
func (d *Driver) image(ctx context.Context, want blueprint.Container) error {
	if a := want.Artifact; a != nil {
		d.mu.Lock()
		loaded := d.loaded[strings.ToLower(a.SHA256)] == want.Image
		d.mu.Unlock()
		if loaded {
			if ok, err := images.Exists(ctx, want.Image, nil); err == nil && ok {
				return nil
			}
		}
		if d.cfg.Artifacts == nil {
			return fmt.Errorf("container %q: artifact %q: this agent has no artifact source", want.Name, a.Name)
		}
		p, err := d.cfg.Artifacts.Fetch(ctx, *a)
		if err != nil {
			return fmt.Errorf("container %q: %w", want.Name, err)
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		rep, err := images.Load(ctx, f)
		if err != nil {
			return fmt.Errorf("container %q: loading archive %q: %w", want.Name, a.Name, err)
		}
		if ok, err := images.Exists(ctx, want.Image, nil); err != nil || !ok {
			return driver.Terminal(fmt.Errorf("container %q: archive %q holds %v, not image %q", want.Name, a.Name, rep.Names, want.Image))
		}
		d.mu.Lock()
		d.loaded[strings.ToLower(a.SHA256)] = want.Image
		d.mu.Unlock()
		return nil
	}
	if ok, err := images.Exists(ctx, want.Image, nil); err == nil && ok {
		return nil
	}
	if _, err := images.Pull(ctx, want.Image, new(images.PullOptions).WithQuiet(true).WithPolicy("missing")); err != nil {
		return fmt.Errorf("container %q: image %q: %w", want.Name, want.Image, err)
	}
	return nil
}

// specgen turns a blueprint container into podman's create spec.
func (d *Driver) specgen(c blueprint.Container) (*specgen.SpecGenerator, error) {
	s := specgen.NewSpecGenerator(c.Image, false)
	s.Name = c.Name
	s.Labels = map[string]string{}
	for k, v := range c.Labels {
		s.Labels[k] = v
	}
	s.Labels[LabelManaged] = "true"
	s.Labels[LabelSpecHash] = SpecHash(c)
	s.Labels[LabelName] = c.Name
	s.Entrypoint = c.Command
	s.Command = c.Args
	s.Env = c.Env
	// An init as PID 1 forwards signals, so stop and replace are quick even
	// for programs that ignore SIGTERM.
	s.Init = ptr(true)
	s.StopTimeout = ptr(uint(10))
	s.RestartPolicy = c.Restart
	if s.RestartPolicy == "" {
		s.RestartPolicy = "always"
	}
	switch c.Network {
	case "host":
		s.NetNS = specgen.Namespace{NSMode: specgen.Host}
	default:
		s.NetNS = specgen.Namespace{NSMode: specgen.NoNetwork}
	}
	for i, m := range c.Mounts {
		src := filepath.Join(d.cfg.Env.Root, m.Source)
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("container %q: mounts[%d].source %q: %w", c.Name, i, m.Source, err)
		}
		opts := []string{"rbind"}
		if m.ReadOnly {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, spec.Mount{Type: "bind", Source: src, Destination: m.Target, Options: opts})
	}
	for i, dev := range c.Devices {
		fi, err := os.Stat(dev)
		if err != nil {
			return nil, fmt.Errorf("container %q: devices[%d] %q does not exist on this node: %w", c.Name, i, dev, err)
		}
		if fi.Mode()&os.ModeDevice == 0 {
			return nil, fmt.Errorf("container %q: devices[%d] %q is not a device node", c.Name, i, dev)
		}
		s.Devices = append(s.Devices, spec.LinuxDevice{Path: dev})
	}
	mem, err := blueprint.ParseBytes(c.Memory)
	if err != nil {
		return nil, driver.Terminal(fmt.Errorf("container %q: memory: %w", c.Name, err))
	}
	if mem > 0 || c.CPUs > 0 {
		s.ResourceLimits = &spec.LinuxResources{}
		if mem > 0 {
			s.ResourceLimits.Memory = &spec.LinuxMemory{Limit: &mem}
		}
		if c.CPUs > 0 {
			period := uint64(100_000)
			quota := int64(c.CPUs * float64(period))
			s.ResourceLimits.CPU = &spec.LinuxCPU{Period: &period, Quota: &quota}
		}
	}
	if h := c.HealthCheck; h != nil {
		interval := h.Interval.Duration
		if interval <= 0 {
			interval = 30 * time.Second
		}
		retries := h.Retries
		if retries <= 0 {
			retries = 3
		}
		s.HealthConfig = &manifest.Schema2HealthConfig{Test: append([]string{"CMD"}, h.Command...),
			Interval: interval, Retries: retries, Timeout: interval}
	}
	return s, nil
}

func ptr[T any](v T) *T { return &v }
