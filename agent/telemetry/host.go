package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/shirou/gopsutil/v3/cpu"
	"github.com/shirou/gopsutil/v3/disk"
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

// Sensors reads every hwmon class under HOST_SYS (default /sys) in one
// form: temperatures, voltages, fans, power and current, each as
// <signal>.<sensor key> (temperature.cpu, voltage.nct6775_vcore,
// fan.nct6775_fan1, power.amdgpu, current.ina219), the names blueprint
// sensors declare ranges for. Without any hwmon temperature it reads the
// thermal zones, as on boards that have no hwmon.
type Sensors struct{}

// Name is the layer.
func (Sensors) Name() string { return "sensors" }

// hwmonClasses are the sysfs-interface classes read, with the signal name,
// the unit and the divisor that turns the kernel's integer into it.
var hwmonClasses = []struct {
	prefix, signal, unit string
	div                  float64
}{
	{"temp", "temperature", "Cel", 1000}, // millidegree Celsius
	{"in", "voltage", "V", 1000},         // millivolt
	{"fan", "fan", "rpm", 1},             // revolutions per minute
	{"power", "power", "W", 1e6},         // microwatt
	{"curr", "current", "A", 1000},       // milliampere
}

var hwmonInput = regexp.MustCompile(`^(temp|in|fan|power|curr)([0-9]+)_(input|average)$`)

// Collect reads every sensor; unreadable ones are skipped and reported
// together, as long as nothing was read.
func (Sensors) Collect(ctx context.Context) ([]streams.Metric, error) {
	sys := os.Getenv("HOST_SYS")
	if sys == "" {
		sys = "/sys"
	}
	type reading struct {
		chip, class, index, label string
		value                     float64
	}
	var rs []reading
	var errs []error
	chips, _ := filepath.Glob(filepath.Join(sys, "class/hwmon/hwmon*"))
	for _, chip := range chips {
		dir := chip
		name := readTrim(filepath.Join(dir, "name"))
		if name == "" {
			// Older drivers keep their files under device/.
			dir = filepath.Join(chip, "device")
			if name = readTrim(filepath.Join(dir, "name")); name == "" {
				continue
			}
		}
		files, _ := os.ReadDir(dir)
		seen := map[string]bool{}
		for _, f := range files {
			m := hwmonInput.FindStringSubmatch(f.Name())
			if m == nil || seen[m[1]+m[2]] {
				continue // power has _input or _average: the first wins
			}
			raw := readTrim(filepath.Join(dir, f.Name()))
			v, err := strconv.ParseFloat(raw, 64)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a number", filepath.Join(dir, f.Name()), raw))
				continue
			}
			seen[m[1]+m[2]] = true
			rs = append(rs, reading{chip: name, class: m[1], index: m[2], label: readTrim(filepath.Join(dir, m[1]+m[2]+"_label")), value: v})
		}
	}
	// A chip with one unlabelled input of a class keeps the chip's name
	// (temperature.cpu); several are told apart by their file prefix.
	unlabelled := map[string]int{}
	for _, r := range rs {
		if r.label == "" {
			unlabelled[r.chip+"/"+r.class]++
		}
	}
	var out []streams.Metric
	for _, r := range rs {
		for _, c := range hwmonClasses {
			if c.prefix != r.class {
				continue
			}
			key := r.chip
			switch {
			case r.label != "":
				key += "_" + r.label
			case unlabelled[r.chip+"/"+r.class] > 1:
				key += "_" + r.class + r.index
			}
			out = append(out, streams.Metric{Name: c.signal + "." + SensorName(key), Value: r.value / c.div, Unit: c.unit})
		}
	}
	if !slices.ContainsFunc(out, func(m streams.Metric) bool { return strings.HasPrefix(m.Name, "temperature.") }) {
		zones, _ := filepath.Glob(filepath.Join(sys, "class/thermal/thermal_zone*"))
		for _, z := range zones {
			name := readTrim(filepath.Join(z, "type"))
			v, err := strconv.ParseFloat(readTrim(filepath.Join(z, "temp")), 64)
			if name == "" || err != nil {
				continue
			}
			out = append(out, streams.Metric{Name: "temperature." + SensorName(name), Value: v / 1000, Unit: "Cel"})
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	return nil, errors.Join(errs...)
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
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
