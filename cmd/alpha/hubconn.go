package main

import (
	"bytes"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/streams"
)

// dialOptions are a command's connection options: a name, credentials and
// the server's CA when given. creds is a user credentials file (a JWT and
// its seed: hub users) or a bare nkey seed (site leaf users: agents, the
// site operator), told apart by content.
func dialOptions(name, creds, ca string) ([]nats.Option, error) {
	opts := []nats.Option{nats.Name(name), nats.Timeout(5 * time.Second)}
	if creds != "" {
		raw, err := os.ReadFile(creds)
		if err != nil {
			return nil, fmt.Errorf("--creds: %w", err)
		}
		if bytes.Contains(raw, []byte("BEGIN NATS USER JWT")) {
			opts = append(opts, nats.UserCredentials(creds))
		} else {
			o, err := nats.NkeyOptionFromSeed(creds)
			if err != nil {
				return nil, fmt.Errorf("--creds %s is neither a credentials file nor an nkey seed: %w", creds, err)
			}
			opts = append(opts, o)
		}
	}
	if ca != "" {
		o, err := tlsfiles.Files{CA: ca}.NATS()
		if err != nil {
			return nil, err
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// dialHub connects an operator's command to the hub and returns the hub
// domain's JetStream; extra options come after the defaults.
func dialHub(name, url, creds, ca string, extra ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	opts, err := dialOptions(name, creds, ca)
	if err != nil {
		return nil, nil, err
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("connecting to hub %s: %w", url, err)
	}
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
