package telemetry

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/load"
	"github.com/shirou/gopsutil/v3/mem"
	"github.com/shirou/gopsutil/v3/net"

	"github.com/alpha-edge/alpha/streams"
)

// Host reads CPU, memory, load and disk usage. gopsutil honours HOST_PROC and
// HOST_SYS, so a containerized agent can read the host's.
type Host struct{}

// Name is the layer.
func (Host) Name() string { return "host" }

// Collect reads what it can; one failing source does not hide the others.
func (Host) Collect(ctx context.Context) ([]streams.Metric, error) {
	var out []streams.Metric
	var errs []error
	// Since the previous call: the first sample after start covers boot.
	if pct, err := cpu.PercentWithContext(ctx, 0, false); err == nil && len(pct) > 0 {
		out = append(out, streams.Metric{Name: "cpu.percent", Value: pct[0], Unit: "%"})
	} else if err != nil {
		errs = append(errs, err)
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		out = append(out,
			streams.Metric{Name: "memory.used", Value: float64(vm.Used), Unit: "B"},
			streams.Metric{Name: "memory.available", Value: float64(vm.Available), Unit: "B"},
			streams.Metric{Name: "memory.percent", Value: vm.UsedPercent, Unit: "%"})
	} else {
		errs = append(errs, err)
	}
	if l, err := load.AvgWithContext(ctx); err == nil {
		out = append(out,
			streams.Metric{Name: "load.1", Value: l.Load1},
			streams.Metric{Name: "load.5", Value: l.Load5},
			streams.Metric{Name: "load.15", Value: l.Load15})
	} else {
		errs = append(errs, err)
	}
	if parts, err := disk.PartitionsWithContext(ctx, false); err == nil {
		seen := map[string]bool{}
		for _, p := range parts {
			if seen[p.Mountpoint] {
				continue
			}
			seen[p.Mountpoint] = true
			u, err := disk.UsageWithContext(ctx, p.Mountpoint)
			if err != nil || u.Total == 0 {
				continue
			}
			lab := map[string]string{"mount": p.Mountpoint, "device": p.Device}
			out = append(out,
				streams.Metric{Name: "disk.used", Value: float64(u.Used), Unit: "B", Labels: lab},
				streams.Metric{Name: "disk.percent", Value: u.UsedPercent, Unit: "%", Labels: lab})
		}
	} else {
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// Sensors reads temperatures from hwmon (or thermal zones) under HOST_SYS.
// Each becomes temperature.<sensor key>, e.g. temperature.cpu or
// temperature.coretemp_core_0, the names blueprint sensors declare ranges for.
type Sensors struct{}

// Name is the layer.
func (Sensors) Name() string { return "sensors" }

// Collect reads every temperature sensor.
func (Sensors) Collect(ctx context.Context) ([]streams.Metric, error) {
	ts, err := host.SensorsTemperaturesWithContext(ctx)
	var out []streams.Metric
	for _, t := range ts {
		out = append(out, streams.Metric{Name: "temperature." + SensorName(t.SensorKey), Value: t.Temperature, Unit: "Cel"})
	}
	// gopsutil returns partial readings with a warning error; keep them.
	if len(out) > 0 {
		err = nil
	}
	return out, err
}

// SensorName turns a gopsutil sensor key into one name token.
func SensorName(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '_'
	}, key)
}

// Net reads each network interface's counters, errors and link state.
type Net struct{}

// Name is the layer.
func (Net) Name() string { return "net" }

// Collect reads /proc/net/dev and the interface flags.
func (Net) Collect(ctx context.Context) ([]streams.Metric, error) {
	counters, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		return nil, err
	}
	up := map[string]float64{}
	if ifs, err := net.InterfacesWithContext(ctx); err == nil {
		for _, i := range ifs {
			if slices.Contains(i.Flags, "up") {
				up[i.Name] = 1
			} else {
				up[i.Name] = 0
			}
		}
	}
	var out []streams.Metric
	for _, c := range counters {
		lab := map[string]string{"iface": c.Name}
		out = append(out,
			streams.Metric{Name: "iface.rx_bytes", Value: float64(c.BytesRecv), Unit: "B", Labels: lab},
			streams.Metric{Name: "iface.tx_bytes", Value: float64(c.BytesSent), Unit: "B", Labels: lab},
			streams.Metric{Name: "iface.rx_errors", Value: float64(c.Errin), Labels: lab},
			streams.Metric{Name: "iface.tx_errors", Value: float64(c.Errout), Labels: lab},
			streams.Metric{Name: "iface.drops", Value: float64(c.Dropin + c.Dropout), Labels: lab})
		if v, ok := up[c.Name]; ok {
			out = append(out, streams.Metric{Name: "iface.up", Value: v, Labels: lab})
		}
	}
	return out, nil
}
