package redteam

import (
	"bytes"
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
	"github.com/alpha-edge/alpha/internal/testkit/prodtest"
	"github.com/alpha-edge/alpha/streams"
)

// Anyone who reaches the hub's leafnode port can keep the admission gate
// (hub --leaf-connect-rate) busy with bare ClientHellos, before any
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

	hellos, stop := hfFlood(t, e.hub.LeafURL(), nil, 16)
	defer stop()
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
	stop()
	t.Logf("%d ClientHellos sent", hellos.Load())

	lb, _ := e.startLeaf(bundleB)
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error {
		if !lb.Connected() {
			return fmt.Errorf("site b not linked after the flood")
		}
		return nil
	})
}

// A flood from one host cannot lock sites out while it lasts: the gate
// takes sources in turn, so a site's handshake waits behind one of the
// flood's, not behind all of them. The flood comes from 127.0.0.2, the
// sites from 127.0.0.1 (two hosts to the hub); it keeps the gate's queue
// full, and a site started during it must link while it goes on.
func TestClientHelloFloodFromOneHostDoesNotLockSitesOut(t *testing.T) {
	e := srcNewEnv(t, "t1")
	bundleB := e.addSite("b", "t1", nil, "n1")
	hellos, stop := hfFlood(t, e.hub.LeafURL(), &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, 64)
	defer stop()
	// The flood past the gate's burst (50) before the site starts.
	check.For(t, 20*time.Second, 20*time.Millisecond, func() error {
		if hellos.Load() < 200 {
			return fmt.Errorf("%d hellos sent", hellos.Load())
		}
		return nil
	})
	before := hellos.Load()
	refused := &hfRefusals{}
	lb, _ := e.StartLeaf(bundleB, prodtest.LeafOptions{ServeTLS: true, Log: refused})
	check.For(t, 60*time.Second, 50*time.Millisecond, func() error {
		if !lb.Connected() {
			return fmt.Errorf("site b not linked during the flood (%d of its handshakes refused, %d ClientHellos sent meanwhile)",
				refused.n.Load(), hellos.Load()-before)
		}
		return nil
	})
	if sent := hellos.Load() - before; sent < 100 {
		t.Fatalf("only %d ClientHellos while site b linked: the flood was not on", sent)
	}
	// Its first handshake waits for a turn and is taken; one more for a
	// turn given up under load. Behind the whole flood (a queue taken in
	// order of arrival) site b's handshakes were refused dozens of times
	// over ~20 s before one got through.
	if n := refused.n.Load(); n > 2 {
		t.Fatalf("site b's handshakes were refused %d times before it linked; want its turn", n)
	}
	t.Logf("site b linked while the flood sent %d ClientHellos; %d of its handshakes refused", hellos.Load()-before, refused.n.Load())
}

// hfRefusals counts a leaf's handshakes the hub refused, from its log.
type hfRefusals struct{ n atomic.Int64 }

func (r *hfRefusals) Write(p []byte) (int, error) {
	r.n.Add(int64(bytes.Count(p, []byte("TLS Handshake Failure"))))
	return len(p), nil
}

// hfFlood sends bare ClientHellos to the hub's leafnode port from n
// connections at a time (from: the local address, nil: any) until stop;
// it counts them.
func hfFlood(t *testing.T, leafURL string, from *net.TCPAddr, n int) (hellos *atomic.Int64, stop func()) {
	u, err := url.Parse(leafURL)
	check.NoError(t, err)
	hellos = &atomic.Int64{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{Timeout: time.Second}
			if from != nil {
				d.LocalAddr = from
			}
			for {
				select {
				case <-done:
					return
				default:
				}
				c, err := d.Dial("tcp", u.Host)
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
	var once sync.Once
	return hellos, func() { once.Do(func() { close(done); wg.Wait() }) }
}
