package chaos

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
)

// Tenant is the one tenant of the harness's operator.
const Tenant = "acme"

// Prod is the production setup the harness runs by default, as the README's
// "Going to production" makes it: an operator with one tenant (`alpha
// accounts init`), a test PKI for the hub's listeners, and the tenant's
// publisher key, which signs every blueprint the harness puts.
type Prod struct {
	Op  *accounts.Operator
	TLS tlsfiles.Files // the CA, and the hub's certificate and key

	mu      sync.Mutex
	lastSeq uint64
}

// NewProd makes the operator in DIR/operator and the PKI in DIR/tls.
func NewProd(t testing.TB, dir string) *Prod {
	t.Helper()
	opDir := filepath.Join(dir, "operator")
	Run(t, "accounts", "init", "--dir", opDir, "--tenants", Tenant)
	op, err := accounts.Load(opDir)
	if err != nil {
		t.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	pki, err := testpki.Write(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	return &Prod{Op: op, TLS: pki}
}

// AdminCreds is the tenant administrator's credentials file.
func (p *Prod) AdminCreds() string { return p.Op.AdminCreds(Tenant) }

// HubOptions connect as the tenant's administrator over TLS.
func (p *Prod) HubOptions(t testing.TB) []nats.Option {
	t.Helper()
	o, err := tlsfiles.Files{CA: p.TLS.CA}.NATS()
	if err != nil {
		t.Fatal(err)
	}
	return []nats.Option{nats.UserCredentials(p.AdminCreds()), o}
}

// Sign signs a blueprint for a node key with the tenant's publisher seed and
// a sequence number that grows with every call, so no two puts (retries
// included) share one and agents never take one for a replay.
func (p *Prod) Sign(key string, blueprint []byte) ([]byte, error) {
	seed, err := os.ReadFile(p.Op.PublisherSeed(Tenant))
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	seq := max(p.lastSeq+1, uint64(time.Now().UnixNano()))
	p.lastSeq = seq
	p.mu.Unlock()
	return sign.Sign(seed, key, seq, blueprint)
}

// Run runs the binary to completion (an admin command) and returns its
// output; a failure fails the test with that output.
func Run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(Binary(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("alpha %v: %v\n%s", args, err, out)
	}
	return string(out)
}
