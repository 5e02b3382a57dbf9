package leaf_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
)

// A site on a link that stalls sets a longer liveness check (`alpha site
// --ping`); the leaf's server runs with it, and a negative one is refused
// naming the value.
func TestUplinkPingInterval(t *testing.T) {
	ctx := context.Background()
	h := startHub(t)
	for _, c := range []struct {
		ping, want time.Duration
	}{{0, 2 * time.Second}, {7 * time.Second, 7 * time.Second}} {
		l, err := leaf.Start(ctx, leaf.Config{Site: "sat", HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(),
			Listen: "127.0.0.1:-1", PingInterval: c.ping})
		check.NoError(t, err)
		v, err := l.Server.Varz(nil)
		check.NoError(t, err)
		if v.PingInterval != c.want {
			t.Errorf("ping %v: the leaf pings every %v, want %v", c.ping, v.PingInterval, c.want)
		}
		l.Shutdown()
	}
	_, err := leaf.Start(ctx, leaf.Config{Site: "bad", HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(),
		Listen: "127.0.0.1:-1", PingInterval: -time.Second})
	if err == nil || !strings.Contains(err.Error(), "-1s") {
		t.Fatalf("ping -1s: %v, want an error naming the value", err)
	}
}
