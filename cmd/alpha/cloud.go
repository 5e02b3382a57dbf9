package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("cloud", "show the hub's cloud configurations: phase, last plan, outputs", runCloud)
}

// runCloud prints the cloud status bucket: one line per site.node.config,
// with its phase, last plan summary, output names and error.
func runCloud(ctx context.Context, args []string) error {
	fs := newFlags("cloud")
	server := fs.String("server", nats.DefaultURL, "NATS URL of the hub (or of a site, with -domain SITE)")
	creds := fs.String("creds", "", "NATS credentials file (the tenant admin's)")
	ca := fs.String("tls-ca", "", "CA of the server's certificate (a tls:// URL)")
	domain := fs.String("domain", streams.HubDomain, "JetStream domain holding the cloud bucket")
	asJSON := fs.Bool("json", false, "print the statuses as JSON")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: alpha cloud [flags] [status] [SITE[.NODE[.CONFIG]]]")
		fs.PrintDefaults()
	}
	// "status" may come before the flags (alpha cloud status --server ...)
	// or after them.
	if len(args) > 0 && args[0] == "status" {
		args = args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) > 0 && rest[0] == "status" {
		rest = rest[1:]
	}
	prefix := ""
	if len(rest) > 0 {
		prefix = rest[0]
	}
	opts, err := dialOptions("alpha cloud", *creds, *ca)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*server, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, *domain)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, cloud.StatusBucket)
	if err != nil {
		return fmt.Errorf("bucket %s: %w", cloud.StatusBucket, err)
	}
	all, err := natsutil.ListKeys(ctx, kv, ">")
	if err != nil {
		return fmt.Errorf("bucket %s: %w", cloud.StatusBucket, err)
	}
	var keys []string
	for _, k := range all {
		if prefix == "" || k == prefix || strings.HasPrefix(k, prefix+".") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var sts []cloud.Status
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		// Display only: the agents check the hub's signature.
		st, _, err := cloud.ParseStatus(e.Value())
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		sts = append(sts, st)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sts)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CONFIGURATION\tPHASE\tLAST PLAN (+ ~ -)\tAPPLIES\tOUTPUTS\tUPDATED\tERROR")
	for _, st := range sts {
		names := make([]string, 0, len(st.Outputs))
		for n := range st.Outputs {
			names = append(names, n)
		}
		sort.Strings(names)
		msg := st.Error
		if msg == "" {
			msg = st.Message
		}
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i] + " ..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%d %d %d\t%d\t%s\t%s\t%s\n", cloud.Key(st.Site, st.Node, st.Config), st.Phase,
			st.Plan.Add, st.Plan.Change, st.Plan.Destroy, st.Applies, strings.Join(names, ","),
			st.Updated.Local().Format(time.DateTime), msg)
	}
	return tw.Flush()
}
