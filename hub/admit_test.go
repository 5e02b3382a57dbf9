package hub

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
)

// Twenty uplinks starting their TLS handshake at once on a hub that
// admits 5 a second: the burst and the second's refill are taken, the
// rest are refused before any key exchange (so they retry instead of
// all running into their deadlines), and once the burst has passed a
// new uplink is taken again.
func TestLeafHandshakesAdmittedAtARate(t *testing.T) {
	pki, err := testpki.Write(t.TempDir())
	check.NoError(t, err)
	cert, err := tls.LoadX509KeyPair(pki.Cert, pki.Key)
	check.NoError(t, err)
	server := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	admitLeafHandshakes(server, 5)

	ln, err := tls.Listen("tcp", "127.0.0.1:0", server) // the test's own listener, kept open
	check.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake() //nolint:errcheck // the client side counts
			}()
		}
	}()
	caPEM, err := os.ReadFile(pki.CA)
	check.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	dial := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
		if err == nil {
			c.Close()
		}
		return err
	}

	var mu sync.Mutex
	var ok, refused int
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := dial()
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				ok++
			} else {
				refused++
			}
		}()
	}
	wg.Wait()
	// 5 at once, 5 a second over the 2 s a handshake may wait: at most
	// 15 (and a little for the clock), at least the burst.
	if ok < 5 || ok > 16 || refused == 0 {
		t.Fatalf("20 at once: %d taken, %d refused; want 5-16 taken and the rest refused", ok, refused)
	}
	check.For(t, 5*time.Second, 200*time.Millisecond, dial)
}
