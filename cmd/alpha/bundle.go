package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/fileio"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

func init() {
	register("bundle", "air-gapped sites: signed bundles on a stick (export, import, export-uplink, import-uplink)", runBundle)
}

const bundleUsage = `usage:
  alpha bundle export --site S [--since REV] -o FILE --operator-dir DIR --hub URL --tls-ca CA   (at the hub)
  alpha bundle import FILE --bundle SITE-BUNDLE --nats URL                                    (at the site)
  alpha bundle export-uplink -o FILE --bundle SITE-BUNDLE --nats URL [--from SEQ]             (at the site)
  alpha bundle import-uplink FILE --operator-dir DIR --hub URL --tls-ca CA                    (at the hub)`

func runBundle(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(bundleUsage)
	}
	switch args[0] {
	case "export":
		return runBundleExport(ctx, args[1:])
	case "import":
		return runBundleAtSite(ctx, "import", args[1:])
	case "export-uplink":
		return runBundleAtSite(ctx, "export-uplink", args[1:])
	case "import-uplink":
		return runBundleImportUplink(ctx, args[1:])
	}
	return fmt.Errorf("unknown subcommand %q\n%s", args[0], bundleUsage)
}

// runBundleExport writes a site's bundle from the hub, as the tenant's
// administrator, signed with the tenant's publisher key (or, on a hub
// whose operator directory holds no keys/, the hub's outputs key): both
// are in every site bundle's trust.
func runBundleExport(ctx context.Context, args []string) error {
	fs := newFlags("bundle export")
	af := addAdminFlags(fs)
	site := fs.String("site", "", "site the bundle is for (required)")
	tenant := fs.String("tenant", "", "tenant of the site (default: the one the site was added for)")
	since := fs.Uint64("since", 0, "only values newer than this hub revision (the bundle's revisions are in its manifest)")
	out := fs.String("o", "", "bundle file to write (required)")
	key := fs.String("key", "", "nkey seed that signs the bundle (default: the tenant's publisher key, else creds/hub-outputs.nk)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *site == "" || *out == "" || *af.hub == "" || fs.NArg() != 0 {
		return errors.New(bundleUsage)
	}
	op, err := accounts.Load(*af.dir)
	if err != nil {
		return err
	}
	if *tenant == "" {
		ts, err := op.SiteTenants(*site)
		if err != nil {
			return err
		}
		if len(ts) != 1 {
			return fmt.Errorf("site %s serves tenants %v: say which with --tenant", *site, ts)
		}
		*tenant = ts[0]
	}
	if *key == "" {
		*key = op.PublisherSeed(*tenant)
		if _, err := os.Stat(*key); err != nil {
			*key = op.HubOutputsSeed()
		}
	}
	seed, err := os.ReadFile(*key)
	if err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	pub, err := op.PublisherKey(*tenant)
	if err != nil {
		return err
	}
	hubKey, err := op.HubOutputsKey()
	if err != nil {
		return err
	}
	revoked, err := op.Revocations(*tenant)
	if err != nil {
		return err
	}
	nc, js, err := af.admin(op, *tenant)
	if err != nil {
		return err
	}
	defer nc.Close()
	f, err := fileio.Create(*out, 0o644)
	if err != nil {
		return err
	}
	defer f.Discard()
	w := bundle.NewWriter(f, bundle.Manifest{}, bundle.NewProgress(os.Stderr, "export", 0))
	m, err := bundle.Export(ctx, js, bundle.ExportConfig{Site: *site, Tenant: *tenant, Since: *since, Seed: seed,
		TrustedKeys: []string{pub, hubKey}, Revocations: revoked}, w)
	if err != nil {
		return err
	}
	if err := f.Commit(); err != nil {
		return err
	}
	fmt.Printf("bundle for site %s written to %s: %s\n", *site, *out, describe(m))
	return nil
}

func describe(m *bundle.Manifest) string {
	var values, arts int
	var bytes int64
	for _, e := range m.Entries {
		bytes += e.Size
		switch e.Kind {
		case bundle.KindKV:
			values++
		case bundle.KindArtifact:
			arts++
		}
	}
	return fmt.Sprintf("%d values, %d artifacts, %.1f MiB, hub revisions %v", values, arts, float64(bytes)/(1<<20), m.Revisions)
}

// runBundleAtSite asks the site leaf's bundle service to import a bundle
// or export the uplink: the leaf reads or writes the file with its own
// rights; the site operator's credential may only ask.
func runBundleAtSite(ctx context.Context, op string, args []string) error {
	fs := newFlags("bundle " + op)
	bdir := fs.String("bundle", "/etc/alpha/site", "site bundle directory (site.json, site-operator.nk)")
	url := fs.String("nats", "nats://127.0.0.1:4222", "the site leaf's client URL")
	ca := fs.String("tls-ca", "", "CA of the leaf's certificate (a tls:// URL)")
	out := fs.String("o", "", "uplink bundle file to write (export-uplink)")
	from := fs.Uint64("from", 0, "export-uplink: every message from this site sequence on (a lost stick), not only what no export or live link took")
	timeout := fs.Duration("timeout", 30*time.Minute, "how long the leaf may take")
	path := ""
	if op == "import" {
		var err error
		if path, err = parseOne(fs, args, "FILE"); err != nil {
			return fmt.Errorf("%w\n%s", err, bundleUsage)
		}
	} else {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *out == "" || fs.NArg() != 0 {
			return errors.New(bundleUsage)
		}
		path = *out
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	sc, err := accounts.LoadSite(*bdir)
	if err != nil {
		return err
	}
	opts, err := dialOptions("alpha bundle", filepath.Join(*bdir, accounts.SiteOperatorSeedFile), *ca)
	if err != nil {
		return err
	}
	opts = append(opts, nats.CustomInboxPrefix(streams.Inbox(sc.Site, streams.SiteOperator)))
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fmt.Errorf("connecting to the site leaf at %s: %w", *url, err)
	}
	defer nc.Close()
	req, _ := json.Marshal(bundle.Request{Path: abs, From: *from})
	rctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	stop := waiting(op)
	msg, err := nc.RequestWithContext(rctx, streams.BundleSubject(sc.Site, op), req)
	stop()
	if errors.Is(err, nats.ErrNoResponders) {
		return fmt.Errorf("no bundle service at %s: is the site's leaf (alpha site / alpha leaf with --bundle) running there?", *url)
	}
	if err != nil {
		return fmt.Errorf("asking the leaf to %s %s: %w", op, abs, err)
	}
	var rep bundle.Reply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return fmt.Errorf("leaf answered %q: %w", msg.Data, err)
	}
	if rep.Error != "" {
		return fmt.Errorf("%s refused: %s", abs, rep.Error)
	}
	if op == "import" {
		r := rep.Imported
		fmt.Printf("imported %s into site %s: %d values written, %d already there; %d artifacts written, %d already there; hub revisions %v\n",
			abs, sc.Site, r.Values, r.SkippedValues, r.Artifacts, r.Present, r.Revisions)
		return nil
	}
	total := 0
	for _, e := range rep.Manifest.Entries {
		fmt.Printf("  %s: site seqs %d-%d, %d messages\n", e.Bucket, e.First, e.Last, e.Messages)
		total += e.Messages
	}
	fmt.Printf("uplink bundle of site %s written to %s: %d messages\n", sc.Site, abs, total)
	return nil
}

// waiting shows the time spent on a terminal while the leaf works.
func waiting(op string) func() {
	p := bundle.NewProgress(os.Stderr, op, 0)
	if p == nil {
		return func() {}
	}
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(os.Stderr)
				return
			case <-t.C:
				fmt.Fprintf(os.Stderr, "\r%s: the leaf is working (%s)", op, time.Since(start).Round(time.Second))
			}
		}
	}()
	return func() { close(done) }
}

// runBundleImportUplink stores a site's uplink bundle at the hub as the
// tenant's administrator, trusting only the site's own leaf keys.
func runBundleImportUplink(ctx context.Context, args []string) error {
	fs := newFlags("bundle import-uplink")
	af := addAdminFlags(fs)
	path, err := parseOne(fs, args, "FILE")
	if err != nil {
		return fmt.Errorf("%w\n%s", err, bundleUsage)
	}
	if *af.hub == "" {
		return errors.New("--hub is required\n" + bundleUsage)
	}
	op, err := accounts.Load(*af.dir)
	if err != nil {
		return err
	}
	// Unverified, only to know whose keys to check it against.
	m, err := bundle.Peek(path)
	if err != nil {
		return err
	}
	keys, err := op.SiteLeafKeys(m.Site, m.Tenant)
	if err != nil {
		return err
	}
	nc, js, err := af.admin(op, m.Tenant)
	if err != nil {
		return err
	}
	defer nc.Close()
	res, err := bundle.ImportUplink(ctx, js, path, keys, m.Site)
	if err != nil {
		return err
	}
	stored := 0
	for _, n := range res.Stored {
		stored += n
	}
	fmt.Printf("uplink bundle of site %s stored at the hub: %d new %v, %d already there, %d refused (not the site's subjects)\n",
		m.Site, stored, res.Stored, res.Skipped, res.Refused)
	return nil
}

// admin connects to the hub as tenant's administrator.
func (a adminFlags) admin(op *accounts.Operator, tenant string) (*nats.Conn, jetstream.JetStream, error) {
	tlsOpts, err := a.tls()
	if err != nil {
		return nil, nil, err
	}
	return op.AdminJetStream(*a.hub, tenant, tlsOpts...)
}

// startBundleService runs the leaf's bundle service (alpha bundle import /
// export-uplink) on its own in-process connection, with the trust and the
// signing key of its site bundle.
func startBundleService(ctx context.Context, l *leaf.Leaf, lc leaf.Config, bundleDir string, dirs []string, log *slog.Logger) error {
	sc, err := accounts.LoadSite(bundleDir)
	if err != nil {
		return err
	}
	trust, err := accounts.BundleTrust(bundleDir)
	if err != nil {
		return err
	}
	seed, err := accounts.LeafSeed(bundleDir)
	if err != nil {
		return err
	}
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(l.Server), nats.Name("alpha-bundle-" + lc.Site)}, lc.ClientOptions...)...)
	if err != nil {
		return fmt.Errorf("bundle service: %w", err)
	}
	go func() { <-ctx.Done(); nc.Close() }()
	js, err := jetstream.NewWithDomain(nc, lc.Site)
	if err != nil {
		return err
	}
	return bundle.Serve(ctx, js, bundle.ServeConfig{Site: lc.Site, Tenant: sc.Tenant, Trusted: trust, Seed: seed, Dirs: dirs, Log: log})
}
