package redteam

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
