package maintenance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/throttle"
	"github.com/alpha-edge/alpha/streams"
)

// MaxHold is the longest a hold can last, so a forgotten hold never pins a
// node forever. The node enforces it on its own clock, even offline.
const MaxHold = 7 * 24 * time.Hour

// ErrTooLong is a hold asked for longer than MaxHold.
var ErrTooLong = errors.New("hold longer than the maximum")

// Hold is an operator's "hands off, I am debugging" for a node, or for some
// of its resources.
type Hold struct {
	Site      string    `json:"site"`
	Node      string    `json:"node"`
	Reason    string    `json:"reason"`
	By        string    `json:"by,omitempty"`
	Created   time.Time `json:"created"`
	Until     time.Time `json:"until"`
	Resources []string  `json:"resources,omitempty"` // empty: the whole node
}

// Expiry is when the hold ends: its Until, but never more than MaxHold after
// it was created, whatever was written into the bucket.
func (h Hold) Expiry() time.Time {
	if limit := h.Created.Add(MaxHold); !h.Created.IsZero() && h.Until.After(limit) {
		return limit
	}
	return h.Until
}

// Active reports whether the hold is in force at now.
func (h Hold) Active(now time.Time) bool { return now.Before(h.Expiry()) }

// Covers reports whether the hold applies to resource id.
func (h Hold) Covers(id string) bool {
	if len(h.Resources) == 0 {
		return true
	}
	for _, r := range h.Resources {
		if r == id {
			return true
		}
	}
	return false
}

func (h Hold) String() string {
	s := "held until " + h.Expiry().UTC().Format(time.RFC3339)
	if h.By != "" {
		s += " by " + h.By
	}
	if len(h.Resources) > 0 {
		s += " for " + strings.Join(h.Resources, ", ")
	}
	if h.Reason != "" {
		s += ": " + h.Reason
	}
	return s
}

var tokenRE = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Key is the bucket key of a node's hold.
func Key(site, node string) (string, error) {
	if !tokenRE.MatchString(site) {
		return "", fmt.Errorf("site %q must be letters, digits, _ or -", site)
	}
	if !tokenRE.MatchString(node) {
		return "", fmt.Errorf("node %q must be letters, digits, _ or -", node)
	}
	return site + "." + node, nil
}

// NewHold builds a hold from now for d, refusing d <= 0 or above MaxHold.
func NewHold(site, node string, now time.Time, d time.Duration, reason, by string, resources []string) (Hold, error) {
	if d <= 0 {
		return Hold{}, fmt.Errorf("--for %v: a hold needs a positive duration", d)
	}
	if d > MaxHold {
		return Hold{}, fmt.Errorf("--for %v: %w of %v", d, ErrTooLong, MaxHold)
	}
	if _, err := Key(site, node); err != nil {
		return Hold{}, err
	}
	return Hold{Site: site, Node: node, Reason: reason, By: by, Created: now.UTC(), Until: now.Add(d).UTC(), Resources: resources}, nil
}

// EnsureBucket opens the holds bucket (streams.HoldsBucket), creating it if
// it is missing; site leaves create it, so this is for tests and tools with
// the rights to.
func EnsureBucket(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, streams.HoldsBucket)
	if err == nil {
		return kv, nil
	}
	kv, err = js.CreateOrUpdateKeyValue(ctx, streams.HoldsConfig)
	if err != nil {
		return nil, fmt.Errorf("holds bucket: %w", err)
	}
	return kv, nil
}

// Put stores a hold, replacing the node's previous one.
func Put(ctx context.Context, kv jetstream.KeyValue, h Hold) error {
	key, err := Key(h.Site, h.Node)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(h)
	_, err = kv.Put(ctx, key, b)
	return err
}

// Release ends a node's hold.
func Release(ctx context.Context, kv jetstream.KeyValue, site, node string) error {
	key, err := Key(site, node)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, key)
}

// HoldSource gives the gate the node's current hold, if any.
type HoldSource interface {
	Current() (Hold, bool)
}

// Holds is a HoldSource kept up to date by a KV watcher (or set directly).
// It is safe for concurrent use.
type Holds struct {
	mu       sync.Mutex
	hold     *Hold
	onChange func()
}

// Current returns the hold last seen.
func (h *Holds) Current() (Hold, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hold == nil {
		return Hold{}, false
	}
	return *h.hold, true
}

// Set replaces the hold (nil clears it) and calls the change callback.
func (h *Holds) Set(hold *Hold) {
	h.mu.Lock()
	h.hold = hold
	fn := h.onChange
	h.mu.Unlock()
	if fn != nil {
		fn()
	}
}

// Watch follows the node's key in the holds bucket until ctx is done,
// calling onChange (e.g. engine.Trigger) after every update so a new or
// released hold takes effect at once. The bucket lives at the site, so this
// keeps working while the uplink is down. It returns once the initial value
// was read.
//
// A watch that ends (the bucket was deleted, the leaf restarted) is made
// again with backoff, logged on log (nil: slog.Default). Meanwhile, and
// after the bucket comes back without the key, the last hold seen stays in
// force until it expires: only a release (a delete or purge of the key)
// ends a hold early, so deleting the bucket releases nothing.
func Watch(ctx context.Context, kv jetstream.KeyValue, site, node string, log *slog.Logger, onChange func()) (*Holds, error) {
	key, err := Key(site, node)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	w, err := kv.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("watching hold %s: %w", key, err)
	}
	h := &Holds{}
	// Initial values, up to the nil marker, before returning.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		h.apply(site, node, e)
	}
	h.mu.Lock()
	h.onChange = onChange
	h.mu.Unlock()
	go h.follow(ctx, kv, key, site, node, w, log.With("key", key))
	return h, nil
}

// apply sets the hold an entry of the node's key says.
func (h *Holds) apply(site, node string, e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		h.Set(nil)
		return
	}
	var hold Hold
	if err := json.Unmarshal(e.Value(), &hold); err != nil {
		// A hold nobody can read is still a hold: fail safe, keep hands
		// off for the maximum, and say why.
		hold = Hold{Site: site, Node: node, Reason: "unreadable hold: " + err.Error(), Until: e.Created().Add(MaxHold)}
	}
	if hold.Created.IsZero() {
		// The bucket's own timestamp bounds a hold written by hand.
		hold.Created = e.Created()
	}
	h.Set(&hold)
}

// Bounds of the pause before watching again: from watchFirst, doubling to
// watchMost, back to watchFirst after a watch that lasted watchSettled.
const (
	watchFirst   = time.Second
	watchMost    = time.Minute
	watchSettled = time.Minute
)

// errWatchEnded is why a watch that nats.go closed ended: it says no more
// (the bucket was deleted, the consumer could not be made again).
var errWatchEnded = errors.New("watch closed by the client library")

// follow applies w's updates and, each time w ends, watches the key again,
// until ctx is done.
func (h *Holds) follow(ctx context.Context, kv jetstream.KeyValue, key, site, node string, w jetstream.KeyWatcher, log *slog.Logger) {
	wait := watchFirst
	for {
		start := time.Now()
		h.drain(ctx, site, node, w)
		w.Stop()
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > watchSettled {
			wait = watchFirst
		}
		for err := errWatchEnded; ; {
			// Jitter: the nodes of a site lose the bucket together.
			d := throttle.Jitter(wait, 20)
			hold, held := h.Current()
			log.Warn("hold watch ended; the last hold seen stays in force; watching again", "in", d, "held", held, "hold", hold.String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			wait = min(2*wait, watchMost)
			if w, err = kv.Watch(ctx, key); err == nil {
				break
			}
		}
		log.Info("hold watch resumed")
	}
}

// drain applies w's updates until w ends or ctx is done. Only entries
// count: a bucket made again without the key says nothing about the hold.
func (h *Holds) drain(ctx context.Context, site, node string, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if e != nil {
				h.apply(site, node, e)
			}
		}
	}
}
