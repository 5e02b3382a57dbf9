package agent

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sync"
	"time"

	godbus "github.com/godbus/dbus/v5"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/agent/containers"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/health"
	"github.com/alpha-edge/alpha/agent/logs"
	"github.com/alpha-edge/alpha/agent/remediation"
	"github.com/alpha-edge/alpha/agent/telemetry"
	"github.com/alpha-edge/alpha/agent/units"
	"github.com/alpha-edge/alpha/blueprint"
)

// observeLoop gathers telemetry, computes health and runs remediation for
// the applied blueprint; when an applied blueprint changes its telemetry or
// remediation, collectors and policies are rebuilt (remediation state
// carries over through its file), and on any other change health is
// re-evaluated against it.
func (a *Agent) observeLoop(ctx context.Context, nc *nats.Conn) {
	pub, err := telemetry.NewPublisher(telemetry.PublisherConfig{Conn: nc, Site: a.cfg.Site, Node: a.cfg.Node, Log: a.log,
		SpoolFile: filepath.Join(a.cfg.StateDir, "telemetry-spool.json")})
	if err != nil {
		a.log.Error("telemetry publisher", "err", err)
		return
	}
	go pub.Run(ctx)
	lines, err := logs.New(logs.Config{Conn: nc, Site: a.cfg.Site, Node: a.cfg.Node, Log: a.log,
		StateFile: filepath.Join(a.cfg.StateDir, "logs-positions.json"), Journal: a.cfg.Journal,
		PodmanURI: a.cfg.PodmanURI, Emit: pub.Publish})
	if err != nil {
		a.log.Error("log shipper", "err", err)
		return
	}
	var current string
	// The shipper's runs end before the agent does: its last positions and
	// counts are written, and an agent started next on this state resumes
	// from them instead of reading (and counting) lines again.
	var shipping sync.WaitGroup
	defer shipping.Wait() // after the stops below
	stops := []context.CancelFunc{}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()
	for {
		bp := a.appliedBlueprint()
		if h := observeKey(bp); h != current {
			current = h
			for _, s := range stops {
				s()
			}
			octx, stop := context.WithCancel(ctx)
			stops = []context.CancelFunc{stop}
			a.startObserving(octx, nc, pub, bp)
			if sel := logs.Select(bp); len(sel.Units)+len(sel.Containers) > 0 {
				if a.cfg.Sandbox {
					sel.Units = nil // the dev stack leaves the host's systemd alone
				}
				shipping.Add(1)
				go func() { defer shipping.Done(); lines.Run(octx, sel) }()
			}
		} else if mon := a.monitor.Load(); mon != nil {
			// Same observers, new resources: health follows now rather
			// than at the next sample.
			mon.Update(ctx, nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.collector.AppliedChanged():
		}
	}
}

// observeKey is what the observers are built from. A blueprint change that
// leaves telemetry and remediation alone (most rollouts) keeps the running
// collectors: rebuilding them on every change made every agent of a fleet
// sample everything at once right after a fleet-wide put, which showed up as
// a 3x slower put-to-applied at 100 sites on one box.
func observeKey(bp *blueprint.Blueprint) string {
	if bp == nil {
		return "none"
	}
	data, _ := json.Marshal(struct {
		T *blueprint.Telemetry
		R any
	}{bp.Spec.Telemetry, bp.Spec.Remediation})
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func (a *Agent) startObserving(ctx context.Context, nc *nats.Conn, pub *telemetry.Publisher, bp *blueprint.Blueprint) {
	if bp == nil {
		bp = blueprint.Empty()
	}
	rem := remediation.New(remediation.Config{
		Policies:  bp.Spec.Remediation,
		Actuator:  a.wiring.actuator,
		Hold:      holdAll{a},
		Emit:      pub.Publish,
		Log:       a.log.With("component", "remediation"),
		StateFile: filepath.Join(a.cfg.StateDir, "remediation.json"),
	})
	mon := &health.Monitor{
		// Health follows the applied blueprint as it changes: resources
		// and dependsOn change without a rebuild (see observeKey).
		Blueprint: func() *blueprint.Blueprint {
			if cur := a.appliedBlueprint(); cur != nil {
				return cur
			}
			return blueprint.Empty()
		},
		Resources: a.resources,
		Compliance: func() *float64 {
			if s, n := a.wiring.compliance.Score(); n > 0 {
				return &s
			}
			return nil
		},
		Publish:  pub.Publish,
		Observe:  rem.Observe,
		OnChange: a.collector.Refresh,
	}
	a.monitor.Store(mon)
	if t := bp.Spec.Telemetry; t != nil {
		if err := telemetry.ApplyRetention(ctx, nc, a.cfg.Site, t.Retention); err != nil {
			a.log.Warn("telemetry retention not applied", "err", err)
		}
	}
	list := func(ctx context.Context) []driver.Resource { return a.resources(ctx) }
	collectors := []telemetry.Collector{
		telemetry.Host{}, telemetry.Sensors{}, telemetry.Net{},
		telemetry.Resources{Layer: "units", List: list}, telemetry.Resources{Layer: "containers", List: list},
		&telemetry.ContainerUsage{URI: cmp.Or(a.cfg.PodmanURI, containers.DefaultURI), Blueprint: a.appliedBlueprint},
		telemetry.Link{Conn: nc, Site: a.cfg.Site},
		telemetry.Agent{Status: a.collector.Last},
	}
	if !a.cfg.Sandbox {
		bus := func(ctx context.Context) (*godbus.Conn, error) {
			return godbus.ConnectSystemBus(godbus.WithContext(ctx))
		}
		if a.cfg.SystemdBus != "" {
			bus = units.DialBus(a.cfg.SystemdBus)
		}
		collectors = append(collectors, &telemetry.UnitUsage{Bus: bus, Root: a.cfg.Root, Blueprint: a.appliedBlueprint})
	}
	go telemetry.Run(ctx, a.log.With("component", "telemetry"), mon.Sink(ctx), telemetry.Schedule(bp.Spec.Telemetry, collectors...)...)
}

// resources is every driver's report.
func (a *Agent) resources(ctx context.Context) []driver.Resource {
	var out []driver.Resource
	for _, r := range a.wiring.reporters {
		out = append(out, r.Report(ctx)...)
	}
	return out
}

func (a *Agent) appliedBlueprint() *blueprint.Blueprint { return a.collector.Last().Applied }

// holdAll suspends remediation while the whole node is held.
type holdAll struct{ a *Agent }

func (h holdAll) Held(now time.Time) bool {
	hold, ok := h.a.wiring.holds.Current()
	return ok && hold.Active(now) && len(hold.Resources) == 0
}
