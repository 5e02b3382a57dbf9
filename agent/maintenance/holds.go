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

// Holds is a HoldSource kept up to date by a KV watcher (or set directly),
// and kept on the node's disk when made by Load with a state directory.
// It is safe for concurrent use.
type Holds struct {
	mu       sync.Mutex
	hold     *Hold
	onChange func()

	// Set by Load: the node's key and the state directory ("" memory only).
	key, site, node string
	dir             string
	log             *slog.Logger
	wmu             sync.Mutex // orders the writes of the state file
	saved           []byte     // what the state file holds; under wmu
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

// Set replaces the hold (nil: released now), saves it, and calls the
// change callback.
func (h *Holds) Set(hold *Hold) { h.set(hold, time.Now()) }

// set replaces the hold; released is when a nil hold was released.
func (h *Holds) set(hold *Hold, released time.Time) {
	h.wmu.Lock()
	h.mu.Lock()
	h.hold = hold
	fn := h.onChange
	h.mu.Unlock()
	h.save(hold, released)
	h.wmu.Unlock()
	if fn != nil {
		fn()
	}
}

// Watch follows the node's key in the holds bucket kv until ctx is done,
// calling onChange (e.g. engine.Trigger) after every update so a new or
// released hold takes effect at once. The bucket lives at the site, so this
// keeps working while the uplink is down. It returns once the initial value
// was read, or at once when the bucket cannot be watched now. h comes from
// Load.
//
// A watch that ends (the bucket was deleted, the leaf restarted) or cannot
// start is made again with backoff, logged, and so is one on a bucket that
// was deleted and made again (found by a periodic look at the bucket).
// Meanwhile, and after the bucket comes back without the key, the hold in
// force (last seen, or loaded from the node's disk) stays until it
// expires: only a release (a delete or purge of the key) ends a hold
// early, and only a put of the key replaces it, so deleting or emptying
// the bucket, or restarting the agent meanwhile, releases nothing.
func (h *Holds) Watch(ctx context.Context, kv jetstream.KeyValue, onChange func()) error {
	if h.key == "" {
		return errors.New("holds: Watch needs holds made by Load")
	}
	f := &follower{kv: kv, key: h.key, site: h.site, node: h.node, log: h.log, h: h}
	// The bucket's birth before the watch: a bucket made again in between
	// is found by the first look.
	f.born, _ = bucketBorn(ctx, kv)
	w, err := kv.Watch(ctx, h.key)
	if err == nil {
		// Initial values, up to the nil marker, before returning.
		for e := range w.Updates() {
			if e == nil {
				break
			}
			f.apply(e)
		}
	} else {
		w = nil
	}
	h.mu.Lock()
	h.onChange = onChange
	h.mu.Unlock()
	go f.follow(ctx, w, err)
	return nil
}

// follower keeps h up to date with the node's key in the bucket kv.
type follower struct {
	kv              jetstream.KeyValue
	key, site, node string
	log             *slog.Logger
	h               *Holds
	born            time.Time // of the bucket watched; zero: not known
}

// apply sets the hold an entry of the node's key says.
func (f *follower) apply(e jetstream.KeyValueEntry) {
	if e.Operation() != jetstream.KeyValuePut {
		f.h.set(nil, e.Created())
		return
	}
	var hold Hold
	if err := json.Unmarshal(e.Value(), &hold); err != nil {
		// A hold nobody can read is still a hold: fail safe, keep hands
		// off for the maximum, and say why.
		hold = Hold{Site: f.site, Node: f.node, Reason: "unreadable hold: " + err.Error(), Until: e.Created().Add(MaxHold)}
	}
	if hold.Created.IsZero() {
		// The bucket's own timestamp bounds a hold written by hand.
		hold.Created = e.Created()
	}
	f.h.set(&hold, time.Time{})
}

// Bounds of the pause before watching again: from watchFirst, doubling to
// watchMost, back to watchFirst after a watch that lasted watchSettled.
// watchLevel is how often the bucket itself is looked at.
const (
	watchFirst   = time.Second
	watchMost    = time.Minute
	watchSettled = time.Minute
	watchLevel   = 10 * time.Second
)

var (
	// errWatchEnded is why a watch that nats.go closed ended: it says no
	// more (the bucket was deleted, its consumer could not be made again).
	errWatchEnded = errors.New("watch closed by the client library")
	// errBucketRemade: nats.go would resume a watch of a bucket deleted
	// and made again at the old bucket's sequence, skipping the new
	// bucket's first entries (a new hold, a release).
	errBucketRemade = errors.New("bucket deleted and made again")
)

// bucketBorn is when kv's stream was made: a bucket deleted and made again
// under the same name is another bucket.
func bucketBorn(ctx context.Context, kv jetstream.KeyValue) (time.Time, error) {
	// Every request has a deadline: one the leaf refuses is never answered.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := kv.Status(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if s, ok := st.(*jetstream.KeyValueBucketStatus); ok && s.StreamInfo() != nil {
		return s.StreamInfo().Created, nil
	}
	return time.Time{}, nil
}

// follow applies w's updates and, each time the watch ends (or, w nil,
// could not start: err), watches the key again, until ctx is done.
func (f *follower) follow(ctx context.Context, w jetstream.KeyWatcher, err error) {
	wait := watchFirst
	for {
		if w != nil {
			start := time.Now()
			err = f.drain(ctx, w)
			w.Stop()
			if ctx.Err() != nil {
				return
			}
			if time.Since(start) > watchSettled {
				wait = watchFirst
			}
		}
		for {
			// Jitter: the nodes of a site lose the bucket together.
			d := throttle.Jitter(wait, 20)
			hold, held := f.h.Current()
			f.log.Warn("hold watch ended; the last hold seen stays in force; watching again", "in", d, "held", held, "hold", hold.String(), "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			wait = min(2*wait, watchMost)
			if f.born, err = bucketBorn(ctx, f.kv); err != nil {
				continue
			}
			if w, err = f.kv.Watch(ctx, f.key); err == nil {
				break
			}
		}
		f.log.Info("hold watch resumed")
	}
}

// drain applies w's updates until w ends, the bucket is gone or made
// again, or ctx is done; it says why. Only entries count: a bucket made
// again without the key says nothing about the hold.
func (f *follower) drain(ctx context.Context, w jetstream.KeyWatcher) error {
	look := time.NewTimer(throttle.Jitter(watchLevel, 20))
	defer look.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errWatchEnded
			}
			if e != nil {
				f.apply(e)
			}
		case <-look.C:
			look.Reset(throttle.Jitter(watchLevel, 20))
			born, err := bucketBorn(ctx, f.kv)
			switch {
			case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
				return err
			case err != nil || born.IsZero():
				// The leaf is slow or away: nats.go's watch rides that out.
			case f.born.IsZero():
				f.born = born
			case !born.Equal(f.born):
				return errBucketRemade
			}
		}
	}
}
