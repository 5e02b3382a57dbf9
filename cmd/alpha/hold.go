package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/maintenance"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("hold", "pause drift repair and updates on a node (or some resources) for a while", runHold)
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runHold(ctx context.Context, args []string) error {
	fs := newFlags("hold")
	node := fs.String("node", "", "node to hold (required)")
	site := fs.String("site", "", "site of the node: its JetStream domain (required)")
	url := fs.String("nats", "nats://127.0.0.1:4222", "NATS URL of the site leaf")
	creds := fs.String("creds", "", "site operator nkey seed from the site bundle (site-operator.nk)")
	ca := fs.String("tls-ca", "", "CA of the site leaf's certificate (a tls:// leaf)")
	dur := fs.Duration("for", 0, fmt.Sprintf("how long the hold lasts (at most %v)", maintenance.MaxHold))
	reason := fs.String("reason", "", "why, shown in status (required with --for)")
	release := fs.Bool("release", false, "end the node's hold now")
	list := fs.Bool("list", false, "list the site's holds")
	var resources stringList
	fs.Var(&resources, "resource", "hold only this resource id, e.g. unit:meter.service (repeatable)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: alpha hold --site S --node N --for 2h --reason \"...\" [--resource ID]...\n       alpha hold --site S --node N --release\n       alpha hold --site S --list")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *site == "" || (*node == "" && !*list) {
		fs.Usage()
		return errors.New("--site and --node are required")
	}
	var h maintenance.Hold
	if !*release && !*list {
		if *reason == "" {
			return errors.New("--reason is required: say why, for whoever finds the node held")
		}
		by := ""
		if u, err := user.Current(); err == nil {
			by = u.Username
		}
		if host, err := os.Hostname(); err == nil && by != "" {
			by += "@" + host
		}
		var err error
		if h, err = maintenance.NewHold(*site, *node, time.Now(), *dur, *reason, by, resources); err != nil {
			return err
		}
	}

	opts, err := dialOptions("alpha hold", *creds, *ca)
	if err != nil {
		return err
	}
	// A site operator may receive only on its own inbox.
	opts = append(opts, nats.CustomInboxPrefix(streams.Inbox(*site, streams.SiteOperator)))
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", *url, err)
	}
	defer nc.Close()
	// The holds bucket lives in the site's own domain, so this works at the
	// site with the uplink down and, through the leaf link, from the hub.
	js, err := jetstream.NewWithDomain(nc, *site)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, streams.HoldsBucket) // the site leaf makes it
	if err != nil {
		return fmt.Errorf("site %s: holds bucket %q: %w", *site, streams.HoldsBucket, err)
	}
	switch {
	case *list:
		return listHolds(ctx, kv, *site)
	case *release:
		if err := maintenance.Release(ctx, kv, *site, *node); err != nil {
			return err
		}
		fmt.Printf("released hold on %s.%s\n", *site, *node)
		return nil
	}
	if err := maintenance.Put(ctx, kv, h); err != nil {
		return err
	}
	fmt.Printf("%s.%s %s\n", *site, *node, h)
	return nil
}

func listHolds(ctx context.Context, kv jetstream.KeyValue, site string) error {
	// Only the site's keys: all a site operator may list.
	keys, err := natsutil.ListKeys(ctx, kv, site+".*")
	if err != nil {
		return fmt.Errorf("site %s: holds bucket %q: %w", site, streams.HoldsBucket, err)
	}
	now := time.Now()
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released since listed
		}
		if err != nil {
			// Not skipped: a leaf gone mid-list would print part of them.
			return fmt.Errorf("site %s: hold %s: %w", site, k, err)
		}
		var h maintenance.Hold
		if err := json.Unmarshal(e.Value(), &h); err != nil {
			fmt.Printf("%s: unreadable: %v\n", k, err)
			continue
		}
		state := "expired"
		if h.Active(now) {
			state = "active"
		}
		fmt.Printf("%s %s %s\n", k, state, h)
	}
	return nil
}
