package check

import (
	"strings"
	"testing"
	"time"
)

// Rebind runs start, which binds an address a server had before (a
// restart on the same port, so clients reconnect), until it succeeds. A
// port is free only while nobody binds it: another process may have taken
// it since, so "address already in use" is tried again for a while; any
// other error fails the test at once.
func Rebind(t testing.TB, start func() error) {
	t.Helper()
	For(t, 20*time.Second, 100*time.Millisecond, func() error {
		err := start()
		if err != nil && strings.Contains(err.Error(), "address already in use") {
			return err
		}
		NoError(t, err)
		return nil
	})
}
