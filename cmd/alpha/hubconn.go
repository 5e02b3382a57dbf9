package main

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/streams"
)

// dialHub connects an operator's command to the hub, with credentials and
// the hub's CA when given, and returns the hub domain's JetStream.
func dialHub(name, url, creds, ca string) (*nats.Conn, jetstream.JetStream, error) {
	opts := []nats.Option{nats.Name(name), nats.Timeout(5 * time.Second)}
	if creds != "" {
		opts = append(opts, nats.UserCredentials(creds))
	}
	if ca != "" {
		o, err := tlsfiles.Files{CA: ca}.NATS()
		if err != nil {
			return nil, nil, err
		}
		opts = append(opts, o)
	}
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
