package tlsfiles_test

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// Routes are mutual TLS: a member's certificate must be usable as a
// client's, and the peer's is verified against the CA.
func TestRoute(t *testing.T) {
	f, err := testpki.Write(t.TempDir())
	check.NoError(t, err)
	c, err := f.Route()
	check.NoError(t, err)
	check.Equal(t, c.ClientAuth, tls.RequireAndVerifyClientCert)
	if c.ClientCAs == nil || c.RootCAs == nil || len(c.Certificates) != 1 {
		t.Fatalf("route TLS verifies nothing or presents nothing: %+v", c)
	}

	for _, tc := range []struct {
		name string
		f    func() tlsfiles.Files
		want string
	}{
		{"no CA", func() tlsfiles.Files { g := f; g.CA = ""; return g }, "--tls-ca is required with --cluster"},
		{"no key", func() tlsfiles.Files { g := f; g.Key = ""; return g }, "--tls-cert and --tls-key are required"},
		{"serverAuth only", func() tlsfiles.Files {
			g, err := testpki.Write(t.TempDir(), x509.ExtKeyUsageServerAuth)
			check.NoError(t, err)
			return g
		}, "has no clientAuth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.f().Route()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Route: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
