package units

import (
	"context"
	"fmt"
	"time"

	sd "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/internal/throttle"
)

const unitPathPrefix = "/org/freedesktop/systemd1/unit/"

// notifyWatchSet tells a running Watch that the set of units changed.
func (d *Driver) notifyWatchSet() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}

// Watch listens to systemd's D-Bus signals: a managed unit going inactive
// or failed (systemctl stop, a crash), unit files changing or a reload
// finishing (systemctl disable) calls notify at once. A unit that keeps
// failing is restarted with growing pauses (see Driver.retry), and the
// signals are paced per unit, so a crash loop is no tight loop here. When
// the bus connection drops it reconnects with backoff.
func (d *Driver) Watch(ctx context.Context, notify func(reason string)) error {
	d.retry.SetNotify(notify)
	th := throttle.New(8, 500*time.Millisecond)
	follow := func(ctx context.Context, reconnect bool) error {
		// Connect only once there is something to watch: a node without
		// systemd and without units is fine.
		for len(d.watchSet()) == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-d.changed:
			}
		}
		return d.listen(ctx, th, notify, reconnect)
	}
	return driver.Reconnect(ctx, follow, func(err error, in time.Duration) {
		d.log.Warn("systemd signal watch ended; reconnecting", "err", err, "in", in)
	})
}

// listen handles signals until the connection drops. After a reconnect it
// asks for a pass, since anything may have changed meanwhile.
func (d *Driver) listen(ctx context.Context, th *throttle.Throttle, notify func(string), reconnect bool) error {
	conn, err := d.cfg.Bus(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	// systemd only emits unit signals to clients that subscribed.
	if err := conn.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").
		CallWithContext(ctx, "org.freedesktop.systemd1.Manager.Subscribe", 0).Err; err != nil {
		return fmt.Errorf("subscribing to systemd: %w", err)
	}
	if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface("org.freedesktop.DBus.Properties"),
		dbus.WithMatchMember("PropertiesChanged"), dbus.WithMatchPathNamespace("/org/freedesktop/systemd1/unit")); err != nil {
		return err
	}
	for _, member := range []string{"UnitFilesChanged", "Reloading"} {
		if err := conn.AddMatchSignalContext(ctx, dbus.WithMatchInterface("org.freedesktop.systemd1.Manager"),
			dbus.WithMatchMember(member)); err != nil {
			return err
		}
	}
	ch := make(chan *dbus.Signal, 256)
	conn.Signal(ch)
	if reconnect {
		notify("units: D-Bus reconnected")
	}
	watched := d.watchSet()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.changed:
			watched = d.watchSet()
		case sig, ok := <-ch:
			if !ok {
				return fmt.Errorf("bus connection closed")
			}
			if len(watched) == 0 {
				continue
			}
			switch sig.Name {
			case "org.freedesktop.systemd1.Manager.UnitFilesChanged":
				th.Do("unit files", func() { notify("units: unit files changed") })
			case "org.freedesktop.systemd1.Manager.Reloading":
				// systemd caches each unit's enablement until a reload
				// (systemctl disable reloads after changing the links), so
				// the end of a reload is when a disable becomes visible.
				if len(sig.Body) == 1 && sig.Body[0] == false {
					th.Do("reload", func() { notify("units: systemd reloaded") })
				}
			case "org.freedesktop.DBus.Properties.PropertiesChanged":
				name, ok := watched[sig.Path]
				if !ok || len(sig.Body) < 2 {
					continue
				}
				if iface, _ := sig.Body[0].(string); iface != "org.freedesktop.systemd1.Unit" {
					continue
				}
				changed, _ := sig.Body[1].(map[string]dbus.Variant)
				st, ok := changed["ActiveState"]
				if !ok {
					continue
				}
				if s, _ := st.Value().(string); s == "inactive" || s == "deactivating" || s == "failed" {
					th.Do(name, func() { notify("units: " + name + " " + s) })
				}
			}
		}
	}
}

// watchSet maps the D-Bus object paths of wanted and owned units to names.
func (d *Driver) watchSet() map[dbus.ObjectPath]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[dbus.ObjectPath]string{}
	for _, u := range d.wanted {
		out[dbus.ObjectPath(unitPathPrefix+sd.PathBusEscape(u.Name))] = u.Name
	}
	for name := range d.owned {
		out[dbus.ObjectPath(unitPathPrefix+sd.PathBusEscape(name))] = name
	}
	return out
}
