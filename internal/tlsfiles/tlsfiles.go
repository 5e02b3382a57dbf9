// Package tlsfiles builds TLS configurations for hub, leaf and agent from
// PEM files, and applies them to a nats-server's listeners and remotes.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Files names a certificate, its key and the CA that signs the peers'.
type Files struct {
	Cert, Key, CA string
}

// Empty reports whether no file was given.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.CA == "" }

// pool reads a CA bundle.
func pool(flag, path string) (*x509.CertPool, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", flag, path, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(raw) {
		return nil, fmt.Errorf("%s %q: no PEM certificate in it", flag, path)
	}
	return p, nil
}

// Server is a listener's TLS: its certificate and key are required; with a
// CA, clients must present a certificate it signed (mutual TLS).
func (f Files) Server() (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("--tls-cert and --tls-key are required for TLS (or --insecure)")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %q / --tls-key %q: %w", f.Cert, f.Key, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return c, nil
}

// Client is a connection's TLS: the CA that signed the server's certificate
// is required; a certificate and key, if given, are presented.
func (f Files) Client() (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("--tls-ca is required to verify the server (or --insecure)")
	}
	p, err := pool("--tls-ca", f.CA)
	if err != nil {
		return nil, err
	}
	c := &tls.Config{RootCAs: p, MinVersion: tls.VersionTLS12}
	if f.Cert != "" && f.Key != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %q / --tls-key %q: %w", f.Cert, f.Key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// Hub puts TLS on a hub's client and leafnode listeners.
func (f Files) Hub(opts *server.Options) error {
	c, err := f.Server()
	if err != nil {
		return err
	}
	opts.TLSConfig = c
	opts.TLS = true
	opts.TLSTimeout = 5
	opts.LeafNode.TLSConfig = c.Clone()
	// At least 5 s; the hub asks more of a fleet reconnecting (hub.Start).
	opts.LeafNode.TLSTimeout = max(opts.LeafNode.TLSTimeout, 5)
	return nil
}

// Route is the TLS of a hub cluster member's routes: mutual, both ways.
// A member presents its certificate when it accepts a route and when it
// dials one, and accepts only peers whose certificate the CA signed, so
// the certificate needs the clientAuth extended key usage besides
// serverAuth, and must name the address the other members dial.
func (f Files) Route() (*tls.Config, error) {
	if f.CA == "" {
		return nil, errors.New("--tls-ca is required with --cluster: routes accept only members whose certificate it signed (or --insecure)")
	}
	c, err := f.Server()
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(c.Certificates[0].Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("--tls-cert %q: %w", f.Cert, err)
	}
	if !clientAuth(leaf) {
		return nil, fmt.Errorf("--tls-cert %q: extended key usage has no clientAuth: cluster members present it when they dial a route (add extendedKeyUsage=serverAuth,clientAuth)", f.Cert)
	}
	p, err := pool("--tls-ca", f.CA)
	if err != nil {
		return nil, err
	}
	c.RootCAs, c.ClientCAs = p, p
	c.ClientAuth = tls.RequireAndVerifyClientCert
	return c, nil
}

// clientAuth reports whether a certificate may authenticate a client (no
// extended key usage at all means any).
func clientAuth(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// Leaf puts TLS on a leaf's uplinks (verifying the hub with the CA) and, if
// a certificate is given, on its client listener for agents.
func (f Files) Leaf(opts *server.Options) error {
	cc, err := f.Client()
	if err != nil {
		return err
	}
	for _, r := range opts.LeafNode.Remotes {
		r.TLS = true
		r.TLSConfig = cc.Clone()
		r.TLSConfig.Certificates = nil
		if r.TLSTimeout == 0 {
			r.TLSTimeout = 5 // leaf.Start sets a longer one (a fleet's reconnect)
		}
	}
	if f.Cert != "" || f.Key != "" {
		sc, err := f.Server()
		if err != nil {
			return err
		}
		opts.TLSConfig = sc
		opts.TLS = true
		opts.TLSTimeout = 5
	}
	return nil
}

// NATS is the client option of a connection that verifies its server.
func (f Files) NATS() (nats.Option, error) {
	c, err := f.Client()
	if err != nil {
		return nil, err
	}
	return nats.Secure(c), nil
}
