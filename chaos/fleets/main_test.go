// Package fleets runs fleet rollouts against real `alpha` processes: a
// production hub, sites behind link proxies, the operator's real CLI. It is
// a package of its own so it runs beside the long chaos scenarios.
package fleets

import (
	"os"
	"testing"

	"github.com/alpha-edge/alpha/chaos"
)

// TestMain removes the binary chaos.Binary built, when ALPHA_BIN did not
// name one.
func TestMain(m *testing.M) {
	code := m.Run()
	chaos.CleanupBinary()
	os.Exit(code)
}
