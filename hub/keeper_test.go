package hub

import (
	"testing"

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
