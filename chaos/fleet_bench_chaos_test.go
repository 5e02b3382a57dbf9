//go:build chaos

package chaos

import (
	"testing"
	"time"
)

// BenchmarkFleetCatchUp10m is the time from the end of a 10 minute outage to the
// blueprint put during it applied. One sample takes over ten minutes, so it
// runs only under the chaos tag (make chaos), not in make bench.
func BenchmarkFleetCatchUp10m(b *testing.B) { benchCatchUp(b, 10*time.Minute, 1) }
