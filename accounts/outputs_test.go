package accounts_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// Every site bundle carries the public half of the hub's outputs key; an
// operator directory from before signed outputs gets the key at its next
// site add, and later bundles carry the same one.
func TestBundleCarriesHubOutputsKey(t *testing.T) {
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"t1"})
	check.NoError(t, err)
	fi, err := os.Stat(op.HubOutputsSeed())
	check.NoError(t, err)
	check.Equal(t, fi.Mode().Perm(), os.FileMode(0o600))

	check.NoError(t, os.Remove(op.HubOutputsSeed())) // as before this change
	keyOf := func(bundle string) string {
		t.Helper()
		keys, err := accounts.ReadTrustedKeys(filepath.Join(bundle, accounts.HubOutputsKeyFile))
		check.NoError(t, err)
		check.Equal(t, len(keys), 1)
		return keys[0]
	}
	a := filepath.Join(dir, "a")
	_, err = op.AddSite("a", "t1", []string{"n1"}, a)
	check.NoError(t, err)
	want, err := op.HubOutputsKey()
	check.NoError(t, err)
	check.Equal(t, keyOf(a), want)
	b := filepath.Join(dir, "b")
	_, err = op.AddSite("b", "t1", []string{"n1"}, b)
	check.NoError(t, err)
	check.Equal(t, keyOf(b), want)
	pub, err := accounts.ReadTrustedKeys(filepath.Join(a, accounts.TrustedKeysFile))
	check.NoError(t, err)
	if pub[0] == want {
		t.Fatal("the hub outputs key is the tenant's publisher key")
	}
}
