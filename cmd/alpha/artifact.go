package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("artifact", "put an image archive or executable into the hub's artifacts bucket", runArtifact)
}

func runArtifact(ctx context.Context, args []string) error {
	const usage = "usage: alpha artifact put [-server URL] [-creds FILE] [-tls-ca CA] NAME FILE | sha256 FILE"
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "sha256":
		if len(args) != 2 {
			return errors.New(usage)
		}
		sum, err := artifacts.FileSHA256(args[1])
		if err != nil {
			return err
		}
		fmt.Println(sum)
		return nil
	case "put":
	default:
		return fmt.Errorf("unknown subcommand %q; %s", args[0], usage)
	}
	fs := newFlags("artifact put")
	server := fs.String("server", nats.DefaultURL, "NATS URL of the hub (or of a site leaf connected to it)")
	creds := fs.String("creds", "", "NATS credentials file (the tenant admin's)")
	ca := fs.String("tls-ca", "", "CA of the server's certificate (a tls:// URL)")
	domain := fs.String("domain", streams.HubDomain, "JetStream domain of the hub")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New(usage)
	}
	name, file := fs.Arg(0), fs.Arg(1)
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	opts, err := dialOptions("alpha artifact", *creds, *ca)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*server, opts...)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *server, err)
	}
	defer nc.Close()
	sum, err := artifacts.Put(ctx, nc, *domain, name, f)
	if err != nil {
		return err
	}
	fmt.Printf("artifact: {name: %s, sha256: %s}\n", name, sum)
	return nil
}
