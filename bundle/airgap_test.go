package bundle_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/agent/artifacts"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/bundle"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/podmantest"
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

func helloDoc(greeting, extra string) []byte {
	return []byte(`apiVersion: alpha/v1
kind: Blueprint
metadata:
  name: hello
spec:
  files:
    - path: /etc/hello.conf
      content: "greeting=` + greeting + `\n"
      mode: "0644"
` + extra)
}

// agSite is the air-gapped site of the test and the hub it belongs to.
type agSite struct {
	t      testing.TB
	p      *prodtest.Hub
	hjs    jetstream.JetStream
	hnc    *nats.Conn
	bundle string
	seed   []byte // the tenant's publisher seed: signs blueprints and bundles
	dir    string
}

// put signs doc for key and stores it at the hub; it returns the hub revision.
func (s *agSite) put(key string, doc []byte) uint64 {
	s.t.Helper()
	env, err := sign.Sign(s.seed, key, 0, doc)
	check.NoError(s.t, err)
	kv, err := s.hjs.KeyValue(context.Background(), streams.BlueprintsBucket)
	check.NoError(s.t, err)
	rev, err := kv.Put(context.Background(), key, env)
	check.NoError(s.t, err)
	return rev
}

// export writes site's bundle, signed with seed, to a new file.
func (s *agSite) export(name, site string, seed []byte) string {
	s.t.Helper()
	path := filepath.Join(s.dir, name)
	f, err := os.Create(path)
	check.NoError(s.t, err)
	defer f.Close()
	_, err = bundle.Export(context.Background(), s.hjs, bundle.ExportConfig{Site: site, Tenant: "acme", Seed: seed},
		bundle.NewWriter(f, bundle.Manifest{}, nil))
	check.NoError(s.t, err)
	return path
}

// operator is the site operator's connection to the leaf, as `alpha bundle
// import` makes it: the bundle's site-operator.nk, no other right.
func (s *agSite) operator(l *leaf.Leaf) *nats.Conn {
	s.t.Helper()
	opt, err := nats.NkeyOptionFromSeed(filepath.Join(s.bundle, accounts.SiteOperatorSeedFile))
	check.NoError(s.t, err)
	nc, err := nats.Connect(l.ClientURL(), opt, nats.CustomInboxPrefix(streams.Inbox("s1", streams.SiteOperator)))
	check.NoError(s.t, err)
	s.t.Cleanup(nc.Close)
	return nc
}

func request(t *testing.T, nc *nats.Conn, op, path string) bundle.Reply {
	t.Helper()
	b, _ := json.Marshal(bundle.Request{Path: path})
	m, err := nc.Request(streams.BundleSubject("s1", op), b, time.Minute)
	check.NoError(t, err)
	var rep bundle.Reply
	check.NoError(t, json.Unmarshal(m.Data, &rep))
	return rep
}

// state is what the site holds: every bundle-fed store's and the marker's
// sequences and counts.
func state(t *testing.T, js jetstream.JetStream) string {
	t.Helper()
	var b strings.Builder
	for _, name := range []string{"KV_blueprints", "KV_cloud", "OBJ_artifacts", "KV_" + bundle.MarkerBucket} {
		s, err := js.Stream(context.Background(), name)
		check.NoError(t, err)
		st := s.CachedInfo().State
		fmt.Fprintf(&b, "%s first %d last %d msgs %d bytes %d; ", name, st.FirstSeq, st.LastSeq, st.Msgs, st.Bytes)
	}
	return b.String()
}

// msgIDs reads stream's messages matching filter: how often each
// Nats-Msg-Id occurs, and each id's content.
func msgIDs(t *testing.T, js jetstream.JetStream, stream, filter string) map[string]int {
	ids, _ := msgContents(t, js, stream, filter)
	return ids
}

func msgContents(t *testing.T, js jetstream.JetStream, stream, filter string) (map[string]int, map[string]string) {
	t.Helper()
	ids, data := map[string]int{}, map[string]string{}
	eachMsg(t, js, stream, filter, func(m jetstream.Msg) {
		id := m.Headers().Get(jetstream.MsgIDHeader)
		ids[id]++
		data[id] = m.Subject() + " " + string(m.Data())
	})
	return ids, data
}

// msgCounts reads stream's messages matching filter: how often each
// subject and content occurs, whatever their ids.
func msgCounts(t *testing.T, js jetstream.JetStream, stream, filter string) map[string]int {
	t.Helper()
	out := map[string]int{}
	eachMsg(t, js, stream, filter, func(m jetstream.Msg) { out[m.Subject()+" "+string(m.Data())]++ })
	return out
}

// eachMsg calls fn with every message of stream matching filter.
func eachMsg(t *testing.T, js jetstream.JetStream, stream, filter string, fn func(jetstream.Msg)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	check.NoError(t, err)
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	check.NoError(t, err)
	var total uint64
	for _, n := range info.State.Subjects {
		total += n
	}
	if total == 0 {
		return
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	check.NoError(t, err)
	for read := uint64(0); read < total; {
		batch, err := c.Fetch(int(min(total-read, 500)), jetstream.FetchMaxWait(5*time.Second))
		check.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			fn(m)
			n++
		}
		check.NoError(t, batch.Error())
		if n == 0 {
			t.Fatalf("%s: read %d of %d messages", stream, read, total)
		}
		read += uint64(n)
	}
}

// hubContents is msgContents of site's telemetry matching filter at the
// hub, keyed by the site's own ids: the hub stores each under
// streams.HubMsgID, and an id that is not scoped so fails the test.
func hubContents(t *testing.T, js jetstream.JetStream, site, filter string) (map[string]int, map[string]string) {
	t.Helper()
	ids, data := msgContents(t, js, streams.TelemetryStream, filter)
	out, outData := map[string]int{}, map[string]string{}
	for id, n := range ids {
		own, _ := strings.CutPrefix(id, site+"/")
		if streams.HubMsgID(site, own) != id {
			t.Fatalf("hub stores a message of %s under id %q, not scoped by the site", site, id)
		}
		out[own] += n
		outData[own] = data[id]
	}
	return out, outData
}

// publish sends n telemetry messages at the site as an agent does: with
// a stable Nats-Msg-Id.
func publish(t *testing.T, js jetstream.JetStream, tag string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		m := nats.NewMsg(fmt.Sprintf("telemetry.s1.n1.test.%s", tag))
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("n1-%s-%d", tag, i))
		m.Data = []byte(fmt.Sprintf(`{"name":"test.%s","value":%d}`, tag, i))
		_, err := js.PublishMsg(context.Background(), m)
		check.NoError(t, err)
	}
}

// sameIDs waits until the hub holds every telemetry message of s1 matching
// filter the site holds, each exactly once, and nothing the site does not
// hold.
func sameIDs(t *testing.T, sjs, hjs jetstream.JetStream, filter string) int {
	t.Helper()
	var n int
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		site, sdata := msgContents(t, sjs, streams.TelemetryStream, filter)
		hub, hdata := hubContents(t, hjs, "s1", filter)
		lost, extra := 0, 0
		for id := range site {
			if hub[id] == 0 {
				lost++
			} else if hdata[id] != sdata[id] {
				t.Fatalf("message %s reached the hub as %q, the site has %q", id, hdata[id], sdata[id])
			}
		}
		for id, c := range hub {
			if c > 1 {
				t.Fatalf("message %s stored %d times at the hub", id, c)
			}
			if site[id] == 0 {
				extra++
			}
		}
		if lost > 0 || extra > 0 {
			return fmt.Errorf("site %d messages, hub %d: %d lost, %d not from the site", len(site), len(hub), lost, extra)
		}
		n = len(site)
		return nil
	})
	return n
}

// An air-gapped site (no --hub at all) gets two signed revisions and an
// artifact-backed container by bundle, its agent applies them, its
// telemetry reaches the hub by uplink bundle (0 lost, 0 duplicated, also
// after importing the same uplink bundle twice), refused bundles change
// nothing, and a live link that connects later duplicates nothing and
// moves no revision back.
func TestAirGappedSiteBothWays(t *testing.T) {
	pm := podmantest.Start(t)
	pm.Busybox(t, "localhost/busybox:1")
	pm.Podman(t, "tag", "localhost/busybox:1", "localhost/sensor:1")
	image := filepath.Join(t.TempDir(), "image.tar")
	pm.Podman(t, "save", "-o", image, "localhost/sensor:1")
	pm.Podman(t, "rmi", "localhost/sensor:1") // only the archive at the hub has it now

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := prodtest.Start(t, prodtest.Options{Tenants: []string{"acme"}})
	s := &agSite{t: t, p: p, dir: t.TempDir()}
	s.bundle = p.AddSite("s1", "acme", nil, "n1")
	p.AddSite("s2", "acme", nil, "n1")
	s.hnc, s.hjs = p.Admin("acme")
	var err error
	s.seed, err = os.ReadFile(p.Op.PublisherSeed("acme"))
	check.NoError(t, err)
	f, err := os.Open(image)
	check.NoError(t, err)
	imgSHA, err := artifacts.Put(ctx, s.hnc, "", "sensor-image", f)
	f.Close()
	check.NoError(t, err)

	store := t.TempDir()
	l, stop := p.StartLeaf(s.bundle, prodtest.LeafOptions{NoHub: true, Store: store})
	check.Equal(t, l.AirGapped(), true)
	sjs := p.LeafJetStream(l)

	trusted, err := accounts.ReadTrustedKeys(filepath.Join(s.bundle, accounts.TrustedKeysFile))
	check.NoError(t, err)
	astate := t.TempDir()
	v, err := sign.NewVerifier(trusted, astate)
	check.NoError(t, err)
	aopts, err := accounts.AgentOptions("s1", "n1", filepath.Join(s.bundle, accounts.AgentSeedFile("n1")))
	check.NoError(t, err)
	root := t.TempDir()
	a, err := agent.New(agent.Config{Site: "s1", Node: "n1", NATSURL: l.ClientURL(), Root: root, StateDir: astate,
		Log: stack.Log(), NATSOptions: aopts, Verify: v.Verify, Resync: time.Second, PodmanURI: pm.URI})
	check.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	applied := func(content string, after uint64) uint64 {
		t.Helper()
		var rev uint64
		check.For(t, 60*time.Second, 100*time.Millisecond, func() error {
			st := a.Status()
			if st.Phase != "Converged" || st.AppliedRevision != st.DesiredRevision || st.AppliedRevision <= after {
				return fmt.Errorf("status %s applied %d desired %d: %s %v %v", st.Phase, st.AppliedRevision, st.DesiredRevision, st.Message, st.Invalid, st.Errors)
			}
			if err := stack.FileIs(filepath.Join(root, "etc/hello.conf"), content); err != nil {
				return err
			}
			rev = st.AppliedRevision
			return nil
		})
		return rev
	}

	// Revision 1, by stick.
	s.put("s1.n1", helloDoc("v1", ""))
	op := s.operator(l)
	b1 := s.export("b1.alpha", "s1", s.seed)
	rep := request(t, op, "import", b1)
	check.Equal(t, rep.Error, "")
	check.Equal(t, rep.Imported.Values, 1)
	rev1 := applied("greeting=v1\n", 0)

	// Revision 2 with an artifact-backed container, by stick.
	ctr := fmt.Sprintf("  containers:\n    - name: sensor\n      image: localhost/sensor:1\n      command: [/bin/sleep, \"100000\"]\n"+
		"      artifact: {name: sensor-image, sha256: %s}\n", imgSHA)
	hubRev2 := s.put("s1.n1", helloDoc("v2", ctr))
	b2 := s.export("b2.alpha", "s1", s.seed)
	rep = request(t, op, "import", b2)
	check.Equal(t, rep.Error, "")
	check.Equal(t, rep.Imported.Artifacts, 1)
	rev2 := applied("greeting=v2\n", rev1)
	if rev2 <= rev1 || rev2 > hubRev2 {
		t.Fatalf("site revisions %d then %d (hub %d): want growing and never above the hub's", rev1, rev2, hubRev2)
	}
	check.For(t, 60*time.Second, 200*time.Millisecond, func() error {
		out, err := pm.TryPodman("inspect", "--format", "{{.State.Status}}", "sensor")
		if err != nil || out != "running" {
			return fmt.Errorf("sensor is %q %v", out, err)
		}
		return nil
	})

	// The same bundle again writes nothing.
	before := state(t, sjs)
	rep = request(t, op, "import", b2)
	check.Equal(t, rep.Error, "")
	check.Equal(t, rep.Imported.Values+rep.Imported.Artifacts, 0)
	check.Equal(t, state(t, sjs), before)

	// The leaf reads and writes only where sticks are, and never over a
	// file: the site operator cannot make it touch anything else.
	outside := filepath.Join("/var/tmp", fmt.Sprintf("alpha-ag-%d.alpha", time.Now().UnixNano()))
	rep = request(t, op, "export-uplink", outside)
	if !strings.Contains(rep.Error, "outside the directories") {
		t.Fatalf("export-uplink to %s: %q", outside, rep.Error)
	}
	if _, err := os.Stat(outside); !errors.Is(err, os.ErrNotExist) {
		os.Remove(outside)
		t.Fatalf("the leaf wrote %s outside the stick directories: %v", outside, err)
	}
	rep = request(t, op, "import", "/etc/hostname")
	if !strings.Contains(rep.Error, "outside the directories") {
		t.Fatalf("import of /etc/hostname: %q", rep.Error)
	}
	b1raw, err := os.ReadFile(b1)
	check.NoError(t, err)
	rep = request(t, op, "export-uplink", b1)
	if !strings.Contains(rep.Error, "exists") {
		t.Fatalf("export-uplink over %s: %q", b1, rep.Error)
	}
	after, err := os.ReadFile(b1)
	check.NoError(t, err)
	check.Equal(t, string(after), string(b1raw))
	check.Equal(t, state(t, sjs), before)

	// Refused bundles: each with a clear message, nothing changed.
	raw, err := os.ReadFile(b2)
	check.NoError(t, err)
	tampered := filepath.Join(s.dir, "tampered.alpha")
	bad := bytes.Clone(raw)
	bad[512+4096] ^= 0x20 // inside the first entry's content (the image archive)
	check.NoError(t, os.WriteFile(tampered, bad, 0o644))
	truncated := filepath.Join(s.dir, "truncated.alpha")
	check.NoError(t, os.WriteFile(truncated, raw[:len(raw)/2], 0o644))
	s.put("s2.n1", helloDoc("other", ""))
	other := s.export("s2.alpha", "s2", s.seed)
	rogueSeed, _, err := sign.NewPublisher()
	check.NoError(t, err)
	rogue := s.export("rogue.alpha", "s1", rogueSeed)
	for _, c := range []struct {
		name, path string
		want       error
	}{
		{"older", b1, bundle.ErrOlder},
		{"tampered", tampered, bundle.ErrTampered},
		{"truncated", truncated, bundle.ErrTruncated},
		{"other site", other, bundle.ErrOtherSite},
		{"untrusted signer", rogue, bundle.ErrUntrusted},
	} {
		rep := request(t, op, "import", c.path)
		if !strings.Contains(rep.Error, c.want.Error()) {
			t.Errorf("%s bundle: reply %q, want %q", c.name, rep.Error, c.want)
		}
		_, err := bundle.Import(ctx, sjs, c.path, bundle.ImportConfig{Site: "s1", Trusted: mustTrust(t, s.bundle)})
		if !errors.Is(err, c.want) {
			t.Errorf("%s bundle: %v, want %v", c.name, err, c.want)
		}
		if got := state(t, sjs); got != before {
			t.Errorf("%s bundle changed the site:\n%s\nwas\n%s", c.name, got, before)
		}
	}
	if st := a.Status(); st.AppliedRevision != rev2 || st.Phase != "Converged" {
		t.Fatalf("after the refused bundles the node is %s at %d, want Converged at %d", st.Phase, st.AppliedRevision, rev2)
	}
	check.NoError(t, stack.FileIs(filepath.Join(root, "etc/hello.conf"), "greeting=v2\n"))

	// Up: the site's telemetry by stick.
	publish(t, sjs, "stick", 300)
	u1 := filepath.Join(s.dir, "up1.alpha")
	rep = request(t, op, "export-uplink", u1)
	check.Equal(t, rep.Error, "")
	leafKeys, err := p.Op.SiteLeafKeys("s1", "acme")
	check.NoError(t, err)
	res, err := bundle.ImportUplink(ctx, s.hjs, u1, leafKeys, "s1")
	check.NoError(t, err)
	if res.Stored[streams.TelemetryStream] < 300 {
		t.Fatalf("uplink import stored %v, want at least the 300 test messages", res.Stored)
	}
	var exported uint64
	for _, e := range rep.Manifest.Entries {
		if e.Bucket == streams.TelemetryStream {
			exported = e.Last
		}
	}
	// Every message the export covered is at the hub once.
	check.For(t, 30*time.Second, 250*time.Millisecond, func() error {
		hub, hdata := hubContents(t, s.hjs, "s1", streams.TelemetrySubjects("s1"))
		if uint64(len(hub)) < exported {
			return fmt.Errorf("hub holds %d of the %d exported", len(hub), exported)
		}
		_, sdata := msgContents(t, sjs, streams.TelemetryStream, streams.TelemetrySubjects("s1"))
		for id, c := range hub {
			if c != 1 {
				return fmt.Errorf("%s stored %d times", id, c)
			}
			if hdata[id] != sdata[id] {
				t.Fatalf("message %s reached the hub as %q, the site has %q", id, hdata[id], sdata[id])
			}
		}
		return nil
	})
	// The node's status came with it.
	hst, err := s.hjs.KeyValue(ctx, streams.StatusBucket)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 100*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(hst, "s1", "n1")
		if err != nil {
			return err
		}
		if ns.AppliedRevision != rev2 || ns.Phase != "Converged" {
			return fmt.Errorf("hub sees s1.n1 %s at %d by stick, want Converged at %d", ns.Phase, ns.AppliedRevision, rev2)
		}
		return nil
	})
	// The same uplink bundle again stores nothing, also once the hub's
	// duplicate windows no longer hold its ids (as a month later).
	for _, st := range []string{streams.TelemetryStream, bundle.BundleStream(streams.TelemetryStream, "s1")} {
		forgetIDs(t, s.hjs, st)
	}
	res, err = bundle.ImportUplink(ctx, s.hjs, u1, leafKeys, "s1")
	check.NoError(t, err)
	check.Equal(t, res.Stored[streams.TelemetryStream]+res.Stored[streams.EventsStream]+res.Stored[streams.StatusStream], 0)
	// An uplink bundle is refused from a key that is not the site's.
	_, err = bundle.ImportUplink(ctx, s.hjs, u1, trusted, "s1")
	if !errors.Is(err, bundle.ErrUntrusted) {
		t.Fatalf("uplink bundle checked against the publisher key: %v, want %v", err, bundle.ErrUntrusted)
	}

	// The export moved the site's uplink past what it took: a live link
	// resumes after it.
	uc, err := sjs.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	pc, err := uc.Consumer(ctx, streams.UplinkConsumer(streams.TelemetryStream))
	check.NoError(t, err)
	check.Equal(t, pc.CachedInfo().AckFloor.Stream, exported)

	// A live link later: the same store, now with the hub.
	listen := strings.TrimPrefix(l.ClientURL(), "nats://")
	stop()
	l2, _ := p.StartLeaf(s.bundle, prodtest.LeafOptions{Store: store, Listen: listen})
	sjs = p.LeafJetStream(l2)
	publish(t, sjs, "live", 200)
	n := sameIDs(t, sjs, s.hjs, streams.TelemetrySubjects("s1"))
	t.Logf("site and hub hold the same %d telemetry messages (0 lost, 0 duplicated)", n)

	// The bundle-filled blueprints became the hub's mirror, at the hub's
	// revisions: the node applies the same revision 2, numbered as the hub
	// numbers it, and no key went back.
	check.For(t, 30*time.Second, 100*time.Millisecond, func() error {
		// Every store, not only the blueprints: the leaf converts them one
		// after the other, and a store between its delete and its mirror's
		// creation is not there (seen once under load).
		for _, name := range []string{"KV_blueprints", "KV_cloud", "OBJ_artifacts"} {
			st, err := sjs.Stream(ctx, name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if st.CachedInfo().Config.Mirror == nil {
				return fmt.Errorf("%s is not a mirror yet", name)
			}
		}
		if got := a.Status(); got.AppliedRevision != hubRev2 || got.Phase != "Converged" {
			return fmt.Errorf("node %s at %d, want the hub's revision %d", got.Phase, got.AppliedRevision, hubRev2)
		}
		return nil
	})
	check.NoError(t, stack.FileIs(filepath.Join(root, "etc/hello.conf"), "greeting=v2\n"))
	// A site on the link takes blueprints from it: a stick is refused,
	// with the reason, and changes nothing.
	linked := state(t, sjs)
	rep = request(t, s.operator(l2), "import", b2)
	if !strings.Contains(rep.Error, "is a mirror of the hub") {
		t.Fatalf("bundle into a linked site: %q", rep.Error)
	}
	check.Equal(t, state(t, sjs), linked)
	// And the status flows live.
	check.For(t, 30*time.Second, 200*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(hst, "s1", "n1")
		if err != nil {
			return err
		}
		if ns.AppliedRevision != hubRev2 {
			return fmt.Errorf("hub sees s1.n1 at %d, want %d", ns.AppliedRevision, hubRev2)
		}
		return nil
	})
}

// forgetIDs shortens stream's duplicate window and waits until it no
// longer holds the ids stored so far: what a hub sees weeks later.
func forgetIDs(t *testing.T, js jetstream.JetStream, stream string) {
	t.Helper()
	ctx := context.Background()
	st, err := js.Stream(ctx, stream)
	check.NoError(t, err)
	cfg := st.CachedInfo().Config
	cfg.Duplicates = 100 * time.Millisecond
	_, err = js.UpdateStream(ctx, cfg)
	check.NoError(t, err)
	subject := cfg.Subjects[0]
	if strings.HasSuffix(subject, ">") {
		subject = strings.TrimSuffix(subject, ">") + "probe"
	}
	probe := nats.NewMsg(subject)
	probe.Header.Set(jetstream.MsgIDHeader, "probe")
	_, err = js.PublishMsg(ctx, probe)
	check.NoError(t, err)
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		ack, err := js.PublishMsg(ctx, probe)
		if err != nil {
			return err
		}
		if ack.Duplicate {
			return fmt.Errorf("%s still holds the probe's id", stream)
		}
		return nil
	})
}

func mustTrust(t *testing.T, dir string) []string {
	t.Helper()
	keys, err := accounts.BundleTrust(dir)
	check.NoError(t, err)
	return keys
}
