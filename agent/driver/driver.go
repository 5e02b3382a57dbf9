// Package driver defines the small interface through which the agent manages
// each section of a blueprint, and the plan a driver returns.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/streams"
)

// Driver manages one section of the blueprint (files, containers, units, ...).
//
// Plan observes the real state of the node every time it is called (the engine
// is level-based and never trusts a cached belief) and returns the changes
// that would converge the node onto bp. Plan must not change the node, and
// the comparison it makes between observed and desired state should live in a
// pure function that unit tests can call. Plan may be called any number of
// times with the same blueprint; an empty plan means the node already matches.
//
// bp is never nil: a node whose key was deleted gets blueprint.Empty(), and
// the driver plans to remove everything it created.
type Driver interface {
	Name() string
	Plan(ctx context.Context, bp *blueprint.Blueprint) (Plan, error)
}

// Watcher is implemented by drivers that can notice drift as it happens
// (inotify, podman events, D-Bus signals). Watch blocks until ctx is done and
// calls notify whenever the node may have drifted; the engine then
// reconciles at once instead of waiting for its periodic resync.
type Watcher interface {
	Watch(ctx context.Context, notify func(reason string)) error
}

// Reporter is implemented by drivers whose resources have a runtime state
// worth reporting beyond "converged" (a container running or crash-looping).
type Reporter interface {
	Report(ctx context.Context) []Resource
}

// Resource is the reported state of one managed thing, as status carries it.
type Resource = streams.Resource

// Op says what a change does to its resource.
type Op string

// The operations a change can perform.
const (
	Create Op = "create"
	Update Op = "update"
	Delete Op = "delete"
)

// Change is one step of a plan. Apply must be idempotent: the engine may
// apply a change again after a crash half-way through.
type Change struct {
	ID     string // resource id, blueprint.ResourceID(kind, name)
	Op     Op
	Detail string // what was found versus what is wanted, for people and drift events
	Found  string // observed value, when it is short enough to record
	Want   string // desired value, likewise
	apply  func(ctx context.Context) error
}

// NewChange builds a change whose Apply calls fn.
func NewChange(id string, op Op, detail string, fn func(ctx context.Context) error) Change {
	return Change{ID: id, Op: op, Detail: detail, apply: fn}
}

// Apply performs the change.
func (c Change) Apply(ctx context.Context) error {
	if c.apply == nil {
		return fmt.Errorf("%s: change has nothing to apply", c.ID)
	}
	return c.apply(ctx)
}

func (c Change) String() string { return fmt.Sprintf("%s %s (%s)", c.Op, c.ID, c.Detail) }

// Plan is the ordered list of changes a driver wants; empty means nothing to do.
type Plan []Change

// Empty reports whether there is nothing to do.
func (p Plan) Empty() bool { return len(p) == 0 }

func (p Plan) String() string {
	if p.Empty() {
		return "nothing to do"
	}
	s := make([]string, len(p))
	for i, c := range p {
		s[i] = c.String()
	}
	return strings.Join(s, "; ")
}

// Env is what every driver is constructed with.
type Env struct {
	// Root prefixes every path the driver manages ("/" in production, a temp
	// dir in tests and in alpha dev).
	Root string
	// StateDir is a directory the driver owns for its bookkeeping (which files
	// it created, artifact cache, ...). It survives reboots.
	StateDir string
	Log      *slog.Logger
}

// ErrTerminal marks an error that retrying cannot fix (a unit file systemd
// rejects, an artifact whose checksum is wrong). The engine reports it and
// does not back off on it alone.
var ErrTerminal = errors.New("terminal")

// Terminal wraps err so errors.Is(err, ErrTerminal) holds.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w (%w)", err, ErrTerminal)
}
