package check

import (
	"net"
	"testing"
	"time"
)

// Rebind waits out a port held by someone else, then binds it.
func TestRebindWaitsForTheAddress(t *testing.T) {
	held, err := net.Listen("tcp", "127.0.0.1:0") // kept open: the "other process"
	NoError(t, err)
	addr := held.Addr().String()
	go func() { time.Sleep(300 * time.Millisecond); held.Close() }()
	start := time.Now()
	tries := 0
	var ln net.Listener
	Rebind(t, func() (err error) {
		tries++
		ln, err = net.Listen("tcp", addr)
		return err
	})
	defer ln.Close()
	if tries < 2 || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("bound %s after %d tries in %v, want it to wait for the holder", addr, tries, time.Since(start))
	}
}
