package version_test

import (
	"testing"

	"github.com/alpha-edge/alpha/internal/version"
)

func TestStringPrefersLinkTimeVersion(t *testing.T) {
	if version.String() == "" {
		t.Fatal("version is empty without -ldflags")
	}
	old := version.Version
	t.Cleanup(func() { version.Version = old })
	version.Version = "v9.9.9"
	if got := version.String(); got != "v9.9.9" {
		t.Fatalf("String() = %q, want the link-time v9.9.9", got)
	}
}
