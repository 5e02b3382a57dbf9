// Package facts reads what a node's agent reports about its machine
// (streams.NodeFacts): fleets select nodes by them.
package facts

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/shirou/gopsutil/v3/host"
	"github.com/shirou/gopsutil/v3/mem"

	"github.com/alpha-edge/alpha/internal/version"
	"github.com/alpha-edge/alpha/streams"
)

// Collect reads the machine's facts. What cannot be read stays empty and
// is named in the error; the rest is still returned. gopsutil honours
// HOST_PROC, HOST_SYS and HOST_ETC, so a containerized agent reports its
// host.
func Collect(ctx context.Context) (streams.NodeFacts, error) {
	f := streams.NodeFacts{
		// Go's names (amd64, arm64, arm): the ones blueprints and
		// artifacts already use, whatever uname says.
		Arch:    runtime.GOARCH,
		CPUs:    runtime.NumCPU(),
		Version: version.String(),
	}
	var errs []error
	if info, err := host.InfoWithContext(ctx); err == nil {
		f.OS = strings.TrimSpace(info.Platform + " " + info.PlatformVersion)
		if f.OS == "" {
			f.OS = info.OS
		}
		f.Kernel = info.KernelVersion
	} else {
		errs = append(errs, fmt.Errorf("facts: os and kernel: %w", err))
	}
	if vm, err := mem.VirtualMemoryWithContext(ctx); err == nil {
		f.MemoryMB = vm.Total >> 20
	} else {
		errs = append(errs, fmt.Errorf("facts: memory: %w", err))
	}
	return f, errors.Join(errs...)
}
