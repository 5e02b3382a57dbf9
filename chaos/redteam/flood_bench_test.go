package redteam

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/check"
	"github.com/alpha-edge/alpha/internal/stack"
	"github.com/alpha-edge/alpha/internal/tlsfiles"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// srcReport adds the distribution of samples as QUANTITY-p50/-p99/-min/
// -max/-n, the form cmd/benchtable reads.
func srcReport(b *testing.B, q string, samples []float64) {
	b.Helper()
	if len(samples) == 0 {
		b.Fatalf("no samples of %s", q)
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	b.ReportMetric(srcPct(s, 0.5), q+"-p50")
	b.ReportMetric(srcPct(s, 0.99), q+"-p99")
	b.ReportMetric(s[0], q+"-min")
	b.ReportMetric(s[len(s)-1], q+"-max")
	b.ReportMetric(float64(len(s)), q+"-n")
}

func srcPct(sorted []float64, p float64) float64 {
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// srcDirBytes is the size of the files under dir.
func srcDirBytes(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// BenchmarkTenantFlood: a rogue tenant's site floods telemetry at its
// maximum rate while another tenant's node takes blueprint updates. The
// hub is its own `alpha hub` process in operator mode with TLS and the
// default limits; the sites and the victim's agent run in this process.
// Reported: the victim's put → applied latency without and with the flood
// (100 sequential puts each), the hub's RSS during the flood, the hub's
// store growth and the rogue's publish rate.
func BenchmarkTenantFlood(b *testing.B) {
	if os.Getenv("ALPHA_BIN") == "" {
		b.Skip("needs ALPHA_BIN, the alpha binary (make bench builds bin/alpha)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := b.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "bench", []string{"victim", "rogue"})
	check.NoError(b, err)
	pki, err := tlsfiles.WriteTestPKI(dir)
	check.NoError(b, err)
	store := filepath.Join(dir, "hub")
	hub := chaos.Start(b, dir, "hub", "hub", "--store", store, "--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1",
		"--operator-dir", op.Dir, "--tls-cert", pki.Cert, "--tls-key", pki.Key, "--no-cloud", "--metrics-listen", "127.0.0.1:0")
	ready := hub.WaitLog("hub ready", 60*time.Second)
	clientURL, leafURL := chaos.LogField(ready, "clients"), chaos.LogField(ready, "leafnodes")
	tlsOpt, err := pki.NATS()
	check.NoError(b, err)

	site := func(id, tenant string) (string, *leaf.Leaf, *accounts.LeafSetup) {
		bundle := filepath.Join(dir, "bundle-"+id)
		_, err := op.AddSite(id, tenant, []string{"n1"}, bundle)
		check.NoError(b, err)
		nc, js, err := op.AdminJetStream(clientURL, tenant, tlsOpt)
		check.NoError(b, err)
		check.NoError(b, accounts.RegisterSite(ctx, js, id))
		nc.Close()
		setup, err := accounts.Leaf(bundle)
		check.NoError(b, err)
		l, err := leaf.Start(ctx, leaf.Config{Site: id, HubURLs: []string{leafURL}, StoreDir: filepath.Join(dir, id), Listen: "127.0.0.1:-1",
			Log: stack.Log(), NoRegister: true, ClientOptions: setup.ClientOptions,
			Options: func(o *server.Options) error {
				if err := setup.Options(o); err != nil {
					return err
				}
				return pki.Leaf(o)
			}})
		check.NoError(b, err)
		b.Cleanup(l.Shutdown)
		return bundle, l, setup
	}

	// The victim: one node whose agent verifies and applies.
	vbundle, vleaf, _ := site("v1", "victim")
	trusted, err := accounts.ReadTrustedKeys(filepath.Join(vbundle, accounts.TrustedKeysFile))
	check.NoError(b, err)
	state := filepath.Join(dir, "v1-agent")
	verifier, err := sign.NewVerifier(trusted, state)
	check.NoError(b, err)
	aopts, err := accounts.AgentOptions("v1", "n1", filepath.Join(vbundle, accounts.AgentSeedFile("n1")))
	check.NoError(b, err)
	root := filepath.Join(dir, "v1-root")
	a, err := agent.New(agent.Config{Site: "v1", Node: "n1", NATSURL: vleaf.ClientURL(), Root: root, StateDir: state,
		Log: stack.Log(), NATSOptions: append(aopts, tlsOpt), Verify: verifier.Verify, Resync: time.Minute})
	check.NoError(b, err)
	actx, acancel := context.WithCancel(ctx)
	adone := make(chan error, 1)
	go func() { adone <- a.Run(actx) }()
	b.Cleanup(func() { acancel(); <-adone })
	seed, err := os.ReadFile(op.PublisherSeed("victim"))
	check.NoError(b, err)
	vnc, vjs, err := op.AdminJetStream(clientURL, "victim", tlsOpt)
	check.NoError(b, err)
	defer vnc.Close()
	bp, err := vjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(b, err)
	gen := 0
	putApplied := func() time.Duration {
		gen++
		value, err := sign.Sign(seed, "v1.n1", 0, chaos.Blueprint(gen, 1))
		check.NoError(b, err)
		start := time.Now()
		_, err = bp.Put(ctx, "v1.n1", value)
		check.NoError(b, err)
		for chaos.AppliedGen(root, 0) != gen {
			if time.Since(start) > 60*time.Second {
				b.Fatalf("generation %d not applied after 60 s (agent: %s %s)", gen, a.Status().Phase, a.Status().Message)
			}
			time.Sleep(200 * time.Microsecond)
		}
		return time.Since(start)
	}
	putApplied() // first apply: connection, mirror, verifier state
	const rounds = 100
	var quiet []float64
	for range rounds {
		quiet = append(quiet, srcMs(putApplied()))
	}

	// The rogue: its leaf's own client publishes as fast as acks allow.
	_, rleaf, rsetup := site("r1", "rogue")
	rnc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(rleaf.Server)}, rsetup.ClientOptions...)...)
	check.NoError(b, err)
	defer rnc.Close()
	rjs, err := jetstream.NewWithDomain(rnc, "r1", jetstream.WithPublishAsyncMaxPending(4096))
	check.NoError(b, err)
	storeBefore := srcDirBytes(store)
	before, err := hub.Usage()
	check.NoError(b, err)
	var sent atomic.Int64
	fctx, fcancel := context.WithCancel(ctx)
	fdone := make(chan struct{})
	floodStart := time.Now()
	go func() {
		defer close(fdone)
		payload := []byte(strings.Repeat("x", 1024))
		for i := 0; fctx.Err() == nil; i++ {
			if _, err := rjs.PublishAsync(fmt.Sprintf("telemetry.r1.n1.flood.m%d", i), payload, jetstream.WithStallWait(time.Second)); err != nil {
				continue
			}
			sent.Add(1)
		}
	}()
	var rss []float64
	rssStop := make(chan struct{})
	rssDone := make(chan struct{})
	go func() {
		defer close(rssDone)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-rssStop:
				return
			case <-t.C:
				if u, err := hub.Usage(); err == nil {
					rss = append(rss, float64(u.RSS)/(1<<20))
				}
			}
		}
	}()
	time.Sleep(2 * time.Second) // the flood is under way before the first put
	var flooded []float64
	for range rounds {
		flooded = append(flooded, srcMs(putApplied()))
	}
	fcancel()
	<-fdone
	floodFor := time.Since(floodStart)
	close(rssStop)
	<-rssDone
	after, err := hub.Usage()
	check.NoError(b, err)
	storeAfter := srcDirBytes(store)

	srcReport(b, "quietMs", quiet)
	srcReport(b, "floodMs", flooded)
	slices.Sort(quiet)
	slices.Sort(flooded)
	b.ReportMetric(srcPct(flooded, 0.99)/srcPct(quiet, 0.99), "p99Ratio")
	srcReport(b, "hubRssFloodMiB", rss)
	b.ReportMetric(float64(before.RSS)/(1<<20), "hubRssBeforeMiB")
	b.ReportMetric(float64(after.RSS)/(1<<20), "hubRssAfterMiB")
	b.ReportMetric(float64(storeAfter-storeBefore)/(1<<20), "hubStoreGrowthMiB")
	b.ReportMetric(float64(sent.Load())/floodFor.Seconds(), "floodMsgs/s")
	b.ReportMetric(float64(sent.Load())*1024/(1<<20), "floodMiB")
	b.ReportMetric(float64(streams.DefaultSiteQuota.TelemetryBytes)/(1<<20), "quotaMiB")
}

func srcMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
