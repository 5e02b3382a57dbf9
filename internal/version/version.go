// Package version is Alpha's version, as the build stamped it.
package version

import (
	"runtime/debug"
	"sync"
)

// Version is set at link time for releases:
//
//	go build -ldflags "-X github.com/alpha-edge/alpha/internal/version.Version=v1.4.0" ./cmd/alpha
//
// Left empty, String falls back to what the Go toolchain recorded.
var Version = ""

var fromBuild = sync.OnceValue(func() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v // go install module@version
	}
	var rev, dirty string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return "dev"
	}
	return "dev-" + rev[:min(12, len(rev))] + dirty
})

// String is Alpha's version: Version if the build set it, else the module
// version or VCS revision the toolchain stamped ("dev-1a2b3c4d5e6f"), else
// "dev". Never empty.
func String() string {
	if Version != "" {
		return Version
	}
	return fromBuild()
}
