package natsutil

import (
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Denials makes a client's permission violations loud. The server answers a
// denied publish or subscribe with an asynchronous -ERR only: a request
// just times out and a loop retrying it would fail quietly forever. Denials
// logs each denied subject at WARN the first time and then at most once per
// LogEvery with the count, and reports the subjects denied recently so the
// owner can show them (an agent puts its node to Degraded).
type Denials struct {
	Log *slog.Logger
	// OnNew is called (outside the lock) when a subject is denied that was
	// not denied within Window.
	OnNew func()

	mu   sync.Mutex
	seen map[string]*denial
}

type denial struct {
	last, logged time.Time
	count        int // since logged
}

// Window is how long a denial counts as recent; LogEvery how often a
// subject denied again and again is logged.
const (
	Window   = 5 * time.Minute
	LogEvery = time.Minute
)

// Handler is the connection's nats.ErrorHandler; it passes every error on
// to next (if set) after noting denials.
func (d *Denials) Handler(next nats.ErrHandler) nats.ErrHandler {
	return func(nc *nats.Conn, sub *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			d.Note(err.Error(), time.Now())
		}
		if next != nil {
			next(nc, sub, err)
		}
	}
}

// Note records one denial, described as the server said it (it names the
// operation and the subject).
func (d *Denials) Note(what string, now time.Time) {
	what = strings.TrimPrefix(strings.TrimPrefix(what, "nats: "), "permissions violation: ")
	d.mu.Lock()
	if d.seen == nil {
		d.seen = map[string]*denial{}
	}
	x, ok := d.seen[what]
	isNew := !ok || now.Sub(x.last) > Window
	if !ok {
		x = &denial{}
		d.seen[what] = x
	}
	x.last = now
	x.count++
	var logN int
	if isNew || now.Sub(x.logged) >= LogEvery {
		logN, x.count, x.logged = x.count, 0, now
	}
	d.mu.Unlock()
	if logN > 0 && d.Log != nil {
		d.Log.Warn("Permissions Violation: NATS refused an operation the credential has no grant for (see accounts/PERMISSIONS.md)",
			"denied", what, "times", logN)
	}
	if isNew && d.OnNew != nil {
		d.OnNew()
	}
}

// Recent lists what was denied within Window before now, sorted.
func (d *Denials) Recent(now time.Time) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for what, x := range d.seen {
		if now.Sub(x.last) <= Window {
			out = append(out, what)
		}
	}
	slices.Sort(out)
	return out
}
