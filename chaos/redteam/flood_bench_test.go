package redteam

import (
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/chaos"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/internal/testkit/testpki"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

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
// default limits; the victim's site and agent run in this process, the
// rogue's leaf and publisher (nats bench) are processes at nice 19.
// Reported: the victim's put → applied latency (sequential puts) for 15 s
// without the flood, for 15 s of the flood staying at the rogue site (the
// hub's ingest holding it there by quota: what the flood costs this machine alone) and
// for 30 s of the flood with the hub taking it; the hub's RSS and CPU
// during the flood, its store growth, what the hub's TELEMETRY holds after
// it (the rogue's quota: 32 MiB per 10 min) and what the rogue stored
// locally.
func BenchmarkTenantFlood(b *testing.B) {
	if os.Getenv("ALPHA_BIN") == "" {
		b.Skip("needs ALPHA_BIN, the alpha binary (make bench builds bin/alpha)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir := b.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "bench", []string{"victim", "rogue"})
	check.NoError(b, err)
	pki, err := testpki.Write(dir)
	check.NoError(b, err)
	store := filepath.Join(dir, "hub")
	hub := chaos.Start(b, dir, "hub", "hub", "--store", store, "--listen", "127.0.0.1:-1", "--leaf-listen", "127.0.0.1:-1",
		"--operator-dir", op.Dir, "--tls-cert", pki.Cert, "--tls-key", pki.Key, "--no-cloud", "--metrics-listen", "")
	ready := hub.WaitLog("hub ready", 60*time.Second)
	clientURL, leafURL := chaos.LogField(ready, "clients"), chaos.LogField(ready, "leafnodes")
	tlsOpt, err := pki.NATS()
	check.NoError(b, err)

	site := func(id, tenant string) (string, *leaf.Leaf, *accounts.LeafSetup) {
		bundle := filepath.Join(dir, "bundle-"+id)
		_, err := op.AddSite(id, tenant, []string{"n1"}, bundle)
		check.NoError(b, err)
		pushSite(b, op, clientURL, tlsOpt, tenant, id)
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
	// Each phase puts for this long (and at least rounds times); the flood
	// phase twice as long, so the rogue's quota at the hub fills up.
	const phase = 15 * time.Second
	var quiet []float64
	for start := time.Now(); time.Since(start) < phase || len(quiet) < rounds; {
		quiet = append(quiet, srcMs(putApplied()))
	}

	// The rogue: its own `alpha leaf` process, and `nats bench` publishing
	// as its node's agent (the agent's permissions allow its telemetry) as
	// fast as it can, each message on a subject of its own.
	rbundle := filepath.Join(dir, "bundle-r1")
	_, err = op.AddSite("r1", "rogue", []string{"n1"}, rbundle)
	check.NoError(b, err)
	pushSite(b, op, clientURL, tlsOpt, "rogue", "r1")
	rnc, rhub, err := op.AdminJetStream(clientURL, "rogue", tlsOpt)
	check.NoError(b, err)
	defer rnc.Close()
	check.NoError(b, accounts.RegisterSite(ctx, rhub, "r1"))
	// The rogue site's processes run at the lowest CPU priority: on a real
	// fleet the rogue is another machine, here it shares two cores with the
	// victim's leaf and agent, and the figure is about the hub.
	rleaf := chaos.StartWrapped(b, dir, "r1-leaf", []string{"nice", "-n", "19"}, nil, "leaf", "--bundle", rbundle, "--hub", leafURL, "--tls-ca", pki.CA,
		"--store", filepath.Join(dir, "r1"), "--listen", "127.0.0.1:-1")
	rurl := chaos.LogField(rleaf.WaitLog("leaf ready", 60*time.Second), "clients")
	// A rogue site has been connected for a while: wait until its uplink
	// flows into the hub before the flood starts.
	check.For(b, 90*time.Second, 250*time.Millisecond, func() error {
		if _, err := stack.NATS(b, rurl, "--nkey", filepath.Join(rbundle, accounts.AgentSeedFile("n1")),
			"pub", "telemetry.r1.n1.hello", "up"); err != nil {
			return err
		}
		s, err := rhub.Stream(ctx, streams.TelemetryStream)
		if err != nil {
			return err
		}
		_, err = s.GetLastMsgForSubject(ctx, "telemetry.r1.n1.hello")
		return err
	})
	// Control: first the flood stays at the rogue site (a quota of one
	// message per window holds it there), which measures what the flood
	// costs this 2-core machine alone; then the hub takes it again under
	// the default quota.
	held := streams.DefaultSiteQuota
	held.TelemetryBytes = 1
	check.NoError(b, accounts.RegisterSiteQuota(ctx, rhub, "r1", &held))
	rstore := filepath.Join(dir, "r1")
	rstoreBefore := srcDirBytes(rstore)
	flood := exec.Command("nice", "-n", "19", stack.NATSBinary(b), "--server", rurl, "--nkey", filepath.Join(rbundle, accounts.AgentSeedFile("n1")),
		"bench", "pub", "telemetry.r1.n1.flood", "--multisubject", "--multisubjectmax", "0", "--size", "1KB", "--msgs", "100000000", "--no-progress")
	flood.Env = append(os.Environ(), "NATS_CONTEXT=", "HOME="+b.TempDir())
	floodLog, err := os.Create(filepath.Join(dir, "r1-flood.log"))
	check.NoError(b, err)
	flood.Stdout, flood.Stderr = floodLog, floodLog
	check.NoError(b, flood.Start())
	floodDone := make(chan struct{})
	go func() { flood.Wait(); close(floodDone) }()
	stopFlood := func() {
		flood.Process.Kill() // by its own PID: the process this benchmark started
		<-floodDone
	}
	b.Cleanup(stopFlood)
	floodStart := time.Now()
	var local []float64
	for time.Since(floodStart) < phase || len(local) < rounds {
		local = append(local, srcMs(putApplied()))
	}

	storeBefore := srcDirBytes(store)
	before, err := hub.Usage()
	check.NoError(b, err)
	check.NoError(b, accounts.RegisterSiteQuota(ctx, rhub, "r1", &streams.DefaultSiteQuota))
	hubStart := time.Now()
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
	// Long enough for the uplink to fill the rogue's quota at the hub
	// (with the backlog of the control phase) and for the hub to refuse
	// the rest.
	var flooded []float64
	for time.Since(hubStart) < 2*phase || len(flooded) < rounds {
		flooded = append(flooded, srcMs(putApplied()))
	}
	hubTook := time.Since(hubStart)
	after, err := hub.Usage()
	check.NoError(b, err)
	storeAfter := srcDirBytes(store)
	select {
	case <-floodDone:
		out, _ := os.ReadFile(floodLog.Name())
		b.Fatalf("the flood stopped early:\n%s", out)
	default:
	}
	stopFlood()
	floodTook := time.Since(floodStart)
	close(rssStop)
	<-rssDone
	taken := srcStreamState(b, rhub, streams.TelemetryStream)
	chaos.Report(b, "quietMs", quiet)
	chaos.Report(b, "floodLocalMs", local)
	chaos.Report(b, "floodMs", flooded)
	chaos.Report(b, "hubRssFloodMiB", rss)
	slices.Sort(quiet)
	slices.Sort(local)
	slices.Sort(flooded)
	storedMiB := float64(srcDirBytes(rstore)-rstoreBefore) / (1 << 20)
	// Single figures, reported as one sample so benchtable can list them.
	for _, f := range []struct {
		q string
		v float64
	}{
		{"p99Ratio", chaos.Percentile(flooded, 0.99) / chaos.Percentile(quiet, 0.99)},
		{"p99RatioToLocal", chaos.Percentile(flooded, 0.99) / chaos.Percentile(local, 0.99)},
		{"hubRssBeforeMiB", float64(before.RSS) / (1 << 20)},
		{"hubCpuFlood%", float64(after.CPU-before.CPU) / float64(hubTook) * 100},
		{"hubStoreGrowthMiB", float64(storeAfter-storeBefore) / (1 << 20)},
		{"hubTelemetryMiB", float64(taken.Bytes) / (1 << 20)},
		{"floodStoredMiB/s", storedMiB / floodTook.Seconds()},
	} {
		chaos.Report(b, f.q, []float64{f.v})
	}
}

func srcMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// pushSite sends a site's account to the running hub, as alpha site add
// does.
func pushSite(b testing.TB, op *accounts.Operator, url string, tlsOpt nats.Option, tenant, site string) {
	b.Helper()
	sys, err := op.SysConn(url, tlsOpt)
	check.NoError(b, err)
	defer sys.Close()
	check.NoError(b, op.PushSite(context.Background(), sys, tenant, site))
}
