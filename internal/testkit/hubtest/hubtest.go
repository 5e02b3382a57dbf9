// Package hubtest starts an in-process JetStream hub with the artifacts bucket,
// for tests of the drivers that fetch artifacts.
package hubtest

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/streams"
)

// Start starts an in-process JetStream server in domain streams.HubDomain with
// an empty streams.ArtifactsBucket, for tests of this package and of the drivers that fetch
// artifacts. It is shut down when the test ends.
func Start(t testing.TB) (*server.Server, *nats.Conn) {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, JetStreamDomain: streams.HubDomain,
		StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("test hub not ready")
	}
	nc, err := nats.Connect(s.ClientURL(), nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateObjectStore(context.Background(), jetstream.ObjectStoreConfig{Bucket: streams.ArtifactsBucket}); err != nil {
		t.Fatal(err)
	}
	return s, nc
}

// Put stores content as name in the hub's streams.ArtifactsBucket.
func Put(t testing.TB, nc *nats.Conn, name string, content []byte) {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, streams.ArtifactsBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(content)); err != nil {
		t.Fatal(err)
	}
}
