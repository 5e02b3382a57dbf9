package cloud_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/cloudref"
	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// The site mirrors its own keys of the hub's cloud bucket; once provisioned,
// the agent resolves its references from the mirror with the hub gone.
func TestOutputsResolveOfflineAtSite(t *testing.T) {
	needTerraform(t)
	ctx := context.Background()
	hubOpts := &server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: streams.HubDomain, StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: -1, NoAdvertise: true},
	}
	hubSrv, err := server.NewServer(hubOpts)
	check.NoError(t, err)
	go hubSrv.Start()
	if !hubSrv.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}
	t.Cleanup(hubSrv.Shutdown)
	hubNC, err := nats.Connect(hubSrv.ClientURL())
	check.NoError(t, err)
	t.Cleanup(hubNC.Close)
	js, err := jetstream.New(hubNC)
	check.NoError(t, err)
	bps, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.BlueprintsBucket})
	check.NoError(t, err)

	// The server writes the port it chose back into its options.
	u, err := url.Parse(fmt.Sprintf("nats-leaf://127.0.0.1:%d", hubOpts.LeafNode.Port))
	check.NoError(t, err)
	leaf, err := server.NewServer(&server.Options{
		ServerName: "site-s1", Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, JetStreamDomain: "s1", StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}},
	})
	check.NoError(t, err)
	go leaf.Start()
	if !leaf.ReadyForConnections(10 * time.Second) {
		t.Fatal("leaf not ready")
	}
	t.Cleanup(leaf.Shutdown)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if hubSrv.NumLeafNodes() != 1 {
			return errors.New("leaf not connected")
		}
		return nil
	})

	r := start(t, js, nil) // creates the cloud bucket the mirror follows
	dir := t.TempDir()
	env := map[string]string{"web": "${cloud.logs.bucket_name}"}
	bp := put(t, bps, "s1.n1", cloudDoc([]string{bucketConfig("logs", "a", dir, "", "0")}, env))
	put(t, bps, "s2.n1", cloudDoc([]string{bucketConfig("logs", "other-site", dir, "", "0")}, nil))
	waitPhase(t, js, "s1.n1.logs", cloud.PhaseApplied, nil)
	waitPhase(t, js, "s2.n1.logs", cloud.PhaseApplied, nil)

	leafNC, err := nats.Connect(leaf.ClientURL())
	check.NoError(t, err)
	t.Cleanup(leafNC.Close)
	siteJS, err := jetstream.New(leafNC)
	check.NoError(t, err)
	mirror, err := siteJS.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: cloud.StatusBucket,
		Mirror: &jetstream.StreamSource{Name: cloud.StatusBucket, Domain: streams.HubDomain, FilterSubject: streams.KVSubjects(cloud.StatusBucket, "s1")},
	})
	check.NoError(t, err)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		_, err := mirror.Get(ctx, "s1.n1.logs")
		return err
	})
	if _, err := mirror.Get(ctx, "s2.n1.logs"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("another site's key reached s1's mirror: %v", err)
	}

	// The hub goes away; the site still resolves.
	r.stop()
	hubSrv.Shutdown()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if leaf.NumLeafNodes() != 0 {
			return errors.New("leaf still linked")
		}
		return nil
	})
	res := cloudref.New(cloudref.NewKV(mirror, "s1", "n1"), nil)
	prepared, err := res.Prepare(ctx, bp)
	check.NoError(t, err)
	check.Equal(t, prepared.Spec.Containers[0].Env["VALUE"], "alpha-a")
}
