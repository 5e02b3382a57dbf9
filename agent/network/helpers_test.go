package network

import (
	"testing"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func mustParse(t testing.TB, doc string) *blueprint.Blueprint {
	t.Helper()
	bp, err := blueprint.Parse([]byte(doc))
	check.NoError(t, err)
	return bp
}
