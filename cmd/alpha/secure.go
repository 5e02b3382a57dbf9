package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
)

// secureFlags are the production flags of hub, leaf, agent and site: TLS
// files, credentials, and --insecure, which turns both off (dev uses none).
type secureFlags struct {
	tls      tlsfiles.Files
	insecure bool
	// hub
	operatorDir string
	// leaf and site
	bundle    string
	stickDirs []string // where the leaf's bundle service takes sticks from
	// agent
	creds, trustedKeys, hubOutputsKey string
	runtime                           runtimeFlags
}

const (
	roleHub = 1 << iota
	roleLeaf
	roleAgent
)

func addSecureFlags(fs *flag.FlagSet, roles int) *secureFlags {
	s := &secureFlags{}
	fs.StringVar(&s.tls.Cert, "tls-cert", "", "TLS certificate (PEM) of this listener")
	fs.StringVar(&s.tls.Key, "tls-key", "", "TLS private key (PEM) of --tls-cert")
	fs.StringVar(&s.tls.CA, "tls-ca", "", "CA (PEM) that signed the server's certificate this connects to")
	fs.BoolVar(&s.insecure, "insecure", false, "run without TLS, accounts and signatures (trying things out only)")
	if roles&roleHub != 0 {
		fs.StringVar(&s.operatorDir, "operator-dir", "", "operator directory from 'alpha accounts init' (operator mode)")
	}
	if roles&roleLeaf != 0 {
		fs.StringVar(&s.bundle, "bundle", "", "site bundle directory from 'alpha site add' (credentials, agents, trusted keys)")
	}
	if roles&roleAgent != 0 {
		fs.StringVar(&s.creds, "creds", "", "agent nkey seed file from the site bundle (agent-NODE.nk)")
		fs.StringVar(&s.trustedKeys, "trusted-keys", "", "file of trusted blueprint publisher keys, one a line")
		fs.StringVar(&s.hubOutputsKey, "hub-outputs-key", "", "file of the hub's cloud outputs public key (default: "+accounts.HubOutputsKeyFile+" beside --trusted-keys)")
	}
	return s
}

// hub puts operator mode and TLS into a hub's configuration.
func (s *secureFlags) hub(c *hub.Config) (*accounts.Operator, error) {
	if s.insecure {
		return nil, nil
	}
	if s.operatorDir == "" {
		return nil, errors.New("--operator-dir is required (alpha accounts init), or --insecure")
	}
	op, err := accounts.Load(s.operatorDir)
	if err != nil {
		return nil, err
	}
	tenants, err := op.Tenants()
	if err != nil {
		return nil, err
	}
	if len(tenants) == 0 {
		return nil, fmt.Errorf("--operator-dir %s holds no tenant", s.operatorDir)
	}
	if _, err := s.tls.Server(); err != nil {
		return nil, err
	}
	hubOpts := op.HubOptions(filepath.Join(c.StoreDir, "resolver"))
	c.Options = chain(c.Options, func(o *server.Options) error {
		if err := hubOpts(o); err != nil {
			return err
		}
		return s.tls.Hub(o)
	})
	// The hub's own connection (bootstrap, cloud) acts for the first tenant;
	// bootstrapTenants makes every other tenant's buckets.
	c.ClientOptions = append(c.ClientOptions, nats.UserCredentials(op.AdminCreds(tenants[0])))
	// Cluster members coordinate in the system account, out of every
	// tenant's reach.
	c.SystemOptions = append(c.SystemOptions, nats.UserCredentials(op.SysCreds()))
	return op, nil
}

// bootstrapTenants creates the buckets and streams of every tenant but the
// first (the hub's own connection serves it) and serves their ingest; then,
// until ctx ends, it serves tenants added to the operator directory while
// the hub runs (alpha accounts tenant-add) within a few seconds.
func bootstrapTenants(ctx context.Context, h *hub.Hub, op *accounts.Operator, log *slog.Logger) error {
	if op == nil {
		return nil
	}
	tenants, err := op.Tenants()
	if err != nil {
		return err
	}
	served := map[string]bool{tenants[0]: true}
	if err := serveTenants(ctx, h, op, served, log); err != nil {
		return err
	}
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if err := serveTenants(ctx, h, op, served, log); err != nil && ctx.Err() == nil {
				log.Warn("serving a new tenant", "err", err)
			}
		}
	}()
	return nil
}

// serveTenants serves every tenant not in served yet and adds it there.
func serveTenants(ctx context.Context, h *hub.Hub, op *accounts.Operator, served map[string]bool, log *slog.Logger) error {
	tenants, err := op.Tenants()
	if err != nil {
		return err
	}
	for _, t := range tenants {
		if served[t] {
			continue
		}
		err := h.ServeTenant(ctx, nats.UserCredentials(op.AdminCreds(t)))
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
			return fmt.Errorf("tenant %s: %w: the tenants' JetStream limits together exceed the hub's store (alpha accounts tenant-add %s --max-storage)", t, err, t)
		}
		if err != nil {
			return fmt.Errorf("tenant %s: %w", t, err)
		}
		served[t] = true
		log.Info("tenant ready", "tenant", t)
	}
	return nil
}

// leaf puts the site bundle's credentials and TLS into a leaf's config.
func (s *secureFlags) leaf(c *leaf.Config) error {
	if s.insecure {
		return nil
	}
	if s.bundle == "" {
		return errors.New("--bundle is required (alpha site add), or --insecure")
	}
	sc, err := accounts.LoadSite(s.bundle)
	if err != nil {
		return err
	}
	if c.Site == "" {
		c.Site = sc.Site
	}
	if c.Site != sc.Site {
		return fmt.Errorf("--site %q but --bundle %s is for site %q", c.Site, s.bundle, sc.Site)
	}
	setup, err := accounts.Leaf(s.bundle)
	if err != nil {
		return err
	}
	if _, err := s.tls.Client(); err != nil {
		return err
	}
	if host, _, err := net.SplitHostPort(c.Listen); err == nil && !isLoopback(host) && (s.tls.Cert == "" || s.tls.Key == "") {
		return fmt.Errorf("--listen %s is reachable from other machines: --tls-cert and --tls-key are required for agents' connections", c.Listen)
	}
	c.Options = chain(c.Options, func(o *server.Options) error {
		if err := setup.Options(o); err != nil {
			return err
		}
		return s.tls.Leaf(o)
	})
	c.ClientOptions = append(c.ClientOptions, setup.ClientOptions...)
	c.NoRegister = true
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// agent puts credentials, TLS and signature checks into an agent's config.
// sameProcess is set by `alpha site`, whose agent talks to its own leaf.
func (s *secureFlags) agent(c *agent.Config, sameProcess bool) error {
	if s.insecure {
		return nil
	}
	creds, trusted := s.creds, s.trustedKeys
	if s.bundle != "" {
		if creds == "" {
			creds = filepath.Join(s.bundle, accounts.AgentSeedFile(c.Node))
		}
		if trusted == "" {
			trusted = filepath.Join(s.bundle, accounts.TrustedKeysFile)
		}
	}
	if creds == "" {
		return errors.New("--creds is required (agent-NODE.nk from the site bundle), or --insecure")
	}
	if trusted == "" {
		return errors.New("--trusted-keys is required: agents apply only signed blueprints, or --insecure")
	}
	opts, err := accounts.AgentOptions(c.Site, c.Node, creds)
	if err != nil {
		return err
	}
	keys, err := accounts.ReadTrustedKeys(trusted)
	if err != nil {
		return fmt.Errorf("--trusted-keys: %w", err)
	}
	v, err := sign.NewVerifier(keys, c.StateDir)
	if err != nil {
		return err
	}
	// Cloud outputs come from a bucket the tenant's admin can write: only
	// the hub's signature makes them safe to put into a signed blueprint.
	// Without the key file the agent runs and refuses every output.
	hubKey := s.hubOutputsKey
	if hubKey == "" {
		hubKey = filepath.Join(filepath.Dir(trusted), accounts.HubOutputsKeyFile)
	}
	if hk, err := accounts.ReadTrustedKeys(hubKey); err == nil {
		ov, err := sign.NewOutputsVerifier(hk, c.StateDir)
		if err != nil {
			return err
		}
		c.VerifyCloud = ov.Verify
	} else if s.hubOutputsKey != "" {
		return fmt.Errorf("--hub-outputs-key: %w", err)
	} else {
		log := c.Log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("no hub outputs key: cloud outputs will be refused", "file", hubKey, "err", err)
	}
	// A separate agent verifies its leaf with --tls-ca; in `alpha site` the
	// leaf's listener has TLS only if it was given a certificate.
	useTLS := s.tls.CA != "" && (!sameProcess || s.tls.Cert != "")
	switch {
	case useTLS:
		o, err := s.tls.NATS()
		if err != nil {
			return err
		}
		opts = append(opts, o)
	case !isLoopbackURL(c.NATSURL):
		return fmt.Errorf("--nats %s is not on this machine: --tls-ca is required", c.NATSURL)
	}
	c.NATSOptions = append(c.NATSOptions, opts...)
	c.Verify = v.Verify
	return nil
}

func isLoopbackURL(raw string) bool {
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil || !isLoopback(u.Hostname()) {
			return false
		}
	}
	return true
}

// chain runs two option hooks in order.
func chain(a, b func(*server.Options) error) func(*server.Options) error {
	if a == nil {
		return b
	}
	return func(o *server.Options) error {
		if err := a(o); err != nil {
			return err
		}
		return b(o)
	}
}
