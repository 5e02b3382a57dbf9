package accounts_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// A hub's copy of the operator directory has no keys/: the publisher's
// public key, which the hub checks signatures with, is beside the account.
func TestPublisherKeyWithoutSeeds(t *testing.T) {
	op, err := accounts.Init(filepath.Join(t.TempDir(), "op"), "test", []string{"x"})
	check.NoError(t, err)
	want, err := op.PublisherKey("x")
	check.NoError(t, err)
	check.NoError(t, os.RemoveAll(filepath.Join(op.Dir, "keys")))
	hubOp, err := accounts.Load(op.Dir)
	check.NoError(t, err)
	got, err := hubOp.PublisherKey("x")
	check.NoError(t, err)
	check.Equal(t, got, want)
	tenants, err := hubOp.Tenants()
	check.NoError(t, err)
	check.Equal(t, len(tenants), 1)
}
