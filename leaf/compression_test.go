package leaf_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// The uplink's compression is the site's choice: off for a site on the
// hub's LAN and by default (no s2 buffers at either end), s2_auto for a
// thin link; the hub follows. Blueprints mirror either way. A mode nats-server does not know
// is refused with the value named.
func TestUplinkCompression(t *testing.T) {
	ctx := context.Background()
	h := startHub(t)
	hubBP := kv(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	for _, c := range []struct{ site, mode, want string }{
		{"lan", "off", server.CompressionOff},
		{"default", "", server.CompressionOff},
		{"sat", "s2_auto", server.CompressionS2Auto},
		{"fast", "s2_fast", server.CompressionS2Fast},
	} {
		l, err := leaf.Start(ctx, leaf.Config{Site: c.site, HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(),
			Listen: "127.0.0.1:-1", Compression: c.mode})
		check.NoError(t, err)
		t.Cleanup(l.Shutdown)
		_, err = hubBP.Put(ctx, c.site+".n1", []byte("for "+c.site))
		check.NoError(t, err)
		siteBP := kv(t, l.ClientURL(), c.site, streams.BlueprintsBucket)
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			e, err := siteBP.Get(ctx, c.site+".n1")
			if err != nil {
				return err
			}
			if string(e.Value()) != "for "+c.site {
				return fmt.Errorf("value %q", e.Value())
			}
			return nil
		})
		lz, err := l.Server.Leafz(nil)
		check.NoError(t, err)
		if len(lz.Leafs) != 1 {
			t.Fatalf("site %s: %d uplinks", c.site, len(lz.Leafs))
		}
		// s2_auto reports the level it picked (s2_uncompressed on loopback).
		got := lz.Leafs[0].Compression
		if c.want == server.CompressionS2Auto {
			if !strings.HasPrefix(got, "s2_") {
				t.Errorf("site %s: uplink compression %q, want an s2 level", c.site, got)
			}
		} else if got != c.want {
			t.Errorf("site %s: uplink compression %q, want %q", c.site, got, c.want)
		}
	}

	_, err := leaf.Start(ctx, leaf.Config{Site: "bad", HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(),
		Listen: "127.0.0.1:-1", Compression: "zip"})
	if err == nil || !strings.Contains(err.Error(), `"zip"`) {
		t.Fatalf("compression zip: %v, want an error naming the value", err)
	}
}
