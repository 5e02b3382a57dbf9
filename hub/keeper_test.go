package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

func TestMirrorConsumerSite(t *testing.T) {
	bp := streams.Store{Bucket: streams.BlueprintsBucket}
	art := streams.Store{Bucket: streams.ArtifactsBucket, Object: true}
	for _, c := range []struct {
		st   streams.Store
		name string
		site string
		ok   bool
	}{
		{bp, "mirror-s1-blueprints", "s1", true},
		{bp, "mirror-a-cloud-blueprints", "a-cloud", true}, // a site named like a store
		{art, streams.MirrorConsumerConfig("s1", art).Durable, "s1", true},
		{bp, "mirror-s1-cloud", "", false},    // another store's
		{bp, "mirror--blueprints", "", false}, // no site
		{bp, "uplink-blueprints", "", false},  // not a mirror consumer
		{bp, "mirror-s1-blueprints2", "", false},
	} {
		site, ok := mirrorConsumerSite(c.st, c.name)
		if site != c.site || ok != c.ok {
			t.Errorf("mirrorConsumerSite(%s, %q) = %q, %v; want %q, %v", c.st.Bucket, c.name, site, ok, c.site, c.ok)
		}
	}
}

// A list page names a consumer whose members are all offline twice (listed
// by hand and missing) and one that answered late once (missing only):
// paging must neither skip consumers nor take the late one for lost.
func TestListConsumersPagesAndOffline(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	check.NoError(t, err)
	s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	nc, err := nats.Connect(s.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	const total, pageSize = 600, 256
	name := func(i int) string { return fmt.Sprintf("mirror-s%03d-blueprints", i) }
	isOffline := func(i int) bool { return i%7 == 0 }
	isLate := func(i int) bool { return i%11 == 0 && !isOffline(i) }
	_, err = nc.Subscribe("$JS.API.CONSUMER.LIST.KV_blueprints", func(m *nats.Msg) {
		var req struct {
			Offset int `json:"offset"`
		}
		check.NoError(t, json.Unmarshal(m.Data, &req))
		l := consumerList{Total: total, Offset: req.Offset, Limit: pageSize}
		for i := req.Offset; i < min(req.Offset+pageSize, total); i++ {
			switch {
			case isOffline(i):
				// As nats-server makes it up for a consumer whose members
				// are all offline (jsClusteredConsumerListRequest): its
				// config and creation time, no name of its own.
				l.Consumers = append(l.Consumers, &jetstream.ConsumerInfo{Config: jetstream.ConsumerConfig{Name: name(i), Durable: name(i)}})
				l.Missing = append(l.Missing, name(i))
			case isLate(i):
				l.Missing = append(l.Missing, name(i))
			default:
				l.Consumers = append(l.Consumers, &jetstream.ConsumerInfo{Name: name(i)})
			}
		}
		b, _ := json.Marshal(l)
		m.Respond(b)
	})
	check.NoError(t, err)
	cis, offline, late, err := listConsumers(context.Background(), nc, "KV_blueprints")
	check.NoError(t, err)
	var wantListed, wantOffline, wantLate int
	for i := range total {
		if isOffline(i) {
			wantOffline++
		}
		if isLate(i) {
			wantLate++
		} else {
			wantListed++
		}
	}
	check.Equal(t, len(cis), wantListed)
	check.Equal(t, len(offline), wantOffline)
	check.Equal(t, len(late), wantLate)
	for _, n := range offline {
		var i int
		fmt.Sscanf(n, "mirror-s%03d-blueprints", &i)
		if !isOffline(i) {
			t.Errorf("%s taken for offline", n)
		}
	}
}

// A member's floors come in parts; only a whole round replaces what it
// said before, and of two members' floors for one consumer the lower wins.
func TestFloorsRounds(t *testing.T) {
	k := &keeper{held: map[string]Floors{}, pending: map[string]Floors{}}
	e := func(name string, floor uint64) FloorEntry {
		return FloorEntry{Account: "A", Stream: "KV_blueprints", Name: name, Floor: floor}
	}
	k.heard(Floors{Server: "m1", Round: 1, Last: true, Consumers: []FloorEntry{e("c1", 10)}})
	k.heard(Floors{Server: "m1", Round: 2, Consumers: []FloorEntry{e("c1", 20)}})
	check.Equal(t, k.floors()["A/KV_blueprints/c1"].Floor, 10) // round 2 not whole yet
	k.heard(Floors{Server: "m1", Round: 2, Last: true, Consumers: []FloorEntry{e("c2", 5)}})
	f := k.floors()
	check.Equal(t, f["A/KV_blueprints/c1"].Floor, 20)
	check.Equal(t, f["A/KV_blueprints/c2"].Floor, 5)
	// A part of round 3 lost: round 4 starts over, round 3's part is not kept.
	k.heard(Floors{Server: "m1", Round: 3, Consumers: []FloorEntry{e("c3", 1)}})
	k.heard(Floors{Server: "m1", Round: 4, Last: true, Consumers: []FloorEntry{e("c1", 30)}})
	f = k.floors()
	if _, ok := f["A/KV_blueprints/c3"]; ok {
		t.Error("a part of an unfinished round was kept")
	}
	k.heard(Floors{Server: "m2", Round: 1, Last: true, Consumers: []FloorEntry{e("c1", 25)}})
	check.Equal(t, k.floors()["A/KV_blueprints/c1"].Floor, 25)
}
