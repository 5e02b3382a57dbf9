package containers

import (
	"context"
	"fmt"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/system"
	"github.com/containers/podman/v5/pkg/domain/entities/types"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/internal/throttle"
)

// driftActions are the podman events after which an owned container may no
// longer be what the blueprint says.
var driftActions = map[string]bool{
	"died": true, "stop": true, "remove": true, "kill": true, "pause": true, "cleanup": true, "exited": true,
}

// newThrottle paces the passes one container's events ask for: an incident
// by hand (a handful of events) goes through at once, while a crash loop
// under podman's own restart policy (several events a second, for ever)
// asks for at most two passes a second.
func newThrottle() *throttle.Throttle {
	return throttle.New(8, 500*time.Millisecond)
}

// Watch follows podman's event stream and calls notify when an owned
// container dies, stops or disappears, so drift is repaired at once rather
// than at the next resync. When the stream breaks (podman restarted) it
// reconnects with backoff and notifies once, since anything may have
// changed meanwhile.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	d.retry.SetNotify(notify)
	go d.healthLoop(ctx, notify)
	follow := func(ctx context.Context, reconnect bool) error { return d.follow(ctx, notify, reconnect) }
	return driver.Reconnect(ctx, follow, func(err error, in time.Duration) {
		d.mu.Lock()
		quiet := len(d.wanted) == 0
		d.mu.Unlock()
		if quiet {
			d.log.Debug("podman event stream ended; reconnecting", "err", err, "in", in)
		} else {
			d.log.Warn("podman event stream ended; reconnecting", "err", err, "in", in)
		}
	})
}

// follow streams events until the stream ends. After a reconnect it asks for
// a pass, since anything may have changed while the stream was down.
func (d *Driver) follow(ctx context.Context, notify func(string), reconnect bool) error {
	cctx, err := d.withConn(ctx)
	if err != nil {
		return err
	}
	ch := make(chan types.Event, 64)
	cancel := make(chan bool, 1)
	ctx2, stop := context.WithCancel(cctx)
	defer stop()
	go func() {
		<-ctx2.Done()
		cancel <- true
	}()
	opts := new(system.EventsOptions).WithStream(true).WithFilters(map[string][]string{"type": {"container"}})
	if err := system.Events(ctx2, ch, cancel, opts); err != nil {
		return err
	}
	if reconnect {
		notify("containers: podman event stream reconnected")
	}
	for e := range ch {
		if e.Actor.Attributes[LabelManaged] != "true" || !driftActions[string(e.Action)] {
			continue
		}
		reason := fmt.Sprintf("containers: %s %s", e.Action, e.Actor.Attributes["name"])
		d.throttle.Do(e.Actor.Attributes["name"], func() { notify(reason) })
	}
	return fmt.Errorf("event stream closed")
}
