// Package check holds the small test helpers every package shares: waiting
// for a condition instead of sleeping, and terse requirements.
package check

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// For polls fn every interval until it returns nil or total elapses, then
// fails the test with fn's last error.
func For(t testing.TB, total, every time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for {
		if err = fn(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", total, err)
		}
		time.Sleep(every)
	}
}

// NoError fails the test at once on err.
func NoError(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// Equal fails the test unless got == want.
func Equal[T comparable](t testing.TB, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// InCI reports whether the tests run under CI, where a skipped real-runtime
// test is a failure rather than a skip.
func InCI() bool { return os.Getenv("CI") != "" }

// Need skips the test when a prerequisite is missing, saying how to enable
// it; under CI it fails instead, because CI must run everything.
func Need(t testing.TB, ok bool, what, how string) {
	t.Helper()
	if ok {
		return
	}
	if InCI() {
		t.Fatalf("%s is missing in CI: %s", what, how)
	}
	t.Skipf("%s is missing; %s", what, how)
}

// NeedRoot requires root.
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "root", "run the tests as root (sudo make test)")
}

// NeedCommand requires an executable on PATH and returns its path.
func NeedCommand(t testing.TB, name, how string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, name, how)
	return p
}

// FailsNaming waits up to within, from now, for the error of an operation
// that must fail (its server was just stopped), and fails the test unless
// one came that names name. It returns how long the failure took.
func FailsNaming(t testing.TB, done <-chan error, within time.Duration, what, name string) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case err := <-done:
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s returned %v after %v, want an error naming %s", what, err, took, name)
		}
		t.Logf("%s failed after %v: %v", what, took, err)
		return took
	case <-time.After(within):
		t.Fatalf("%s still running after %v", what, within)
		return within
	}
}
