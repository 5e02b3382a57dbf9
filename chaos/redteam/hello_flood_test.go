package redteam

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// Anyone who reaches the hub's leafnode port can spend the admission gate's
// budget (hub --leaf-connect-rate) with bare ClientHellos, before any
// authentication: README says so. What the flood must not reach: a site
// already linked keeps its link and gets the blueprint put during the
// flood, and once the flood ends a site links again.
func TestClientHelloFloodLeavesLinkedSitesAlone(t *testing.T) {
	ctx := context.Background()
	e := srcNewEnv(t, "t1")
	bundleA := e.addSite("a", "t1", nil, "n1")
	bundleB := e.addSite("b", "t1", nil, "n1")
	_, hjs := e.admin("t1")
	la, ajs := e.startLeaf(bundleA)
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !la.Connected() {
			return fmt.Errorf("site a not linked")
		}
		return nil
	})
	hubBP, err := hjs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)
	siteBP, err := ajs.KeyValue(ctx, streams.BlueprintsBucket)
	check.NoError(t, err)

	u, err := url.Parse(e.hub.LeafURL())
	check.NoError(t, err)
	stop := make(chan struct{})
	var hellos atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", u.Host, time.Second)
				if err != nil {
					continue
				}
				tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the attacker's own client
				tc.SetDeadline(time.Now().Add(3 * time.Second))            //nolint:errcheck // bounded either way
				tc.Handshake()                                             //nolint:errcheck // fails: the hub speaks INFO first
				tc.Close()
				hellos.Add(1)
			}
		}()
	}
	// Let the flood spend the budget (a burst of 50) before the put;
	// past it the gate holds each attempt until the attacker gives up.
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		if hellos.Load() < 60 {
			return fmt.Errorf("%d hellos sent", hellos.Load())
		}
		return nil
	})
	_, err = hubBP.Put(ctx, "a.n1", []byte("put during the flood"))
	check.NoError(t, err)
	check.For(t, 20*time.Second, 50*time.Millisecond, func() error {
		got, err := siteBP.Get(ctx, "a.n1")
		if err != nil {
			return err
		}
		if string(got.Value()) != "put during the flood" {
			return fmt.Errorf("site a holds %q", got.Value())
		}
		return nil
	})
	if !la.Connected() {
		t.Fatal("site a lost its link during the flood")
	}
	close(stop)
	wg.Wait()
	t.Logf("%d ClientHellos sent", hellos.Load())

	lb, _ := e.startLeaf(bundleB)
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !lb.Connected() {
			return fmt.Errorf("site b not linked after the flood")
		}
		return nil
	})
}
