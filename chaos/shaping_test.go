package chaos

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// echoServer echoes every connection back; it stops with the test.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// Latency delays without cutting throughput (a delay line), and the
// bandwidth limit paces each direction.
func TestProxyLatencyAndBandwidth(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echoServer(t))
	check.NoError(t, err)
	defer p.Close()
	p.SetLatency(100 * time.Millisecond)
	p.SetBandwidth(100_000)
	c, err := net.Dial("tcp", p.Addr())
	check.NoError(t, err)
	defer c.Close()

	start := time.Now()
	_, err = c.Write([]byte("x"))
	check.NoError(t, err)
	one := make([]byte, 1)
	_, err = io.ReadFull(c, one)
	check.NoError(t, err)
	// The lower bounds prove the shaping; the upper ones that nothing is
	// far off (latency paid per chunk would take 20 s below), with room
	// for a busy machine's late wake-ups, which the pacer adds up.
	if rtt := time.Since(start); rtt < 200*time.Millisecond || rtt > 1500*time.Millisecond {
		t.Fatalf("one byte echoed in %v, want about 200 ms (100 ms each way)", rtt)
	}

	const n = 200_000 // 2 s at 100 kB/s; far longer if latency were paid per chunk
	start = time.Now()
	go c.Write(make([]byte, n))
	_, err = io.ReadFull(c, make([]byte, n))
	check.NoError(t, err)
	took := time.Since(start)
	t.Logf("%d bytes echoed at 100 kB/s with 100 ms each way in %v", n, took.Round(time.Millisecond))
	if took < 1800*time.Millisecond || took > 10*time.Second {
		t.Fatalf("%d bytes took %v, want about 2.2 s", n, took)
	}
}

// Flap takes the link down and up until its context ends, and leaves it up.
func TestProxyFlap(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echoServer(t))
	check.NoError(t, err)
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	downs := p.Flap(ctx, 10*time.Millisecond, 30*time.Millisecond, false)
	if downs < 3 {
		t.Fatalf("link went down %d times in 500 ms of 10-30 ms periods", downs)
	}
	check.Equal(t, p.Mode(), Up)
	c, err := net.Dial("tcp", p.Addr())
	check.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("ok"))
	check.NoError(t, err)
	buf := make([]byte, 2)
	_, err = io.ReadFull(c, buf)
	check.NoError(t, err)
	check.Equal(t, p.Conns(), 1)
}
