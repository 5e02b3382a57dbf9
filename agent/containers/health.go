package containers

import (
	"context"
	"time"

	"github.com/containers/podman/v5/pkg/bindings/containers"
)

// healthLoop runs the containers' health checks itself. podman schedules
// them with systemd timers, which do not exist where systemd is not PID 1
// (and podman then never runs them); running the check through the API
// records the result in podman's own health state, which Report reads. A
// change of health asks the engine for a pass, so status shows it.
func (d *Driver) healthLoop(ctx context.Context, notify func(string)) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := map[string]time.Time{}
	status := map[string]string{}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			d.mu.Lock()
			wanted := d.wanted
			d.mu.Unlock()
			for _, c := range wanted {
				h := c.HealthCheck
				if h == nil {
					continue
				}
				interval := h.Interval.Duration
				if interval <= 0 {
					interval = 30 * time.Second
				}
				if now.Sub(last[c.Name]) < interval {
					continue
				}
				last[c.Name] = now
				cctx, err := d.withConn(ctx)
				if err != nil {
					continue
				}
				res, err := containers.RunHealthCheck(cctx, c.Name, nil)
				if err != nil {
					d.log.Debug("health check not run", "container", c.Name, "err", err)
					continue
				}
				if res.Status != status[c.Name] {
					status[c.Name] = res.Status
					d.log.Info("container health", "container", c.Name, "status", res.Status)
					notify("containers: " + c.Name + " " + res.Status)
				}
			}
		}
	}
}
