package chaos

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// echo runs a line echo server on loopback.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte(l))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn, r *bufio.Reader, msg string, wait time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return "", err
	}
	return r.ReadString('\n')
}

func TestProxyModes(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echo(t))
	check.NoError(t, err)
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	check.NoError(t, err)
	r := bufio.NewReader(c)
	got, err := roundTrip(c, r, "a", time.Second)
	check.NoError(t, err)
	check.Equal(t, got, "a\n")

	// Blackhole: nothing comes back, and nothing is lost once restored.
	p.Set(Blackhole)
	if _, err := roundTrip(c, r, "b", 200*time.Millisecond); err == nil {
		t.Fatal("blackholed link answered")
	}
	p.Set(Up)
	c.SetDeadline(time.Now().Add(2 * time.Second))
	got, err = r.ReadString('\n')
	check.NoError(t, err)
	check.Equal(t, got, "b\n")

	// Cut: the connection is closed and new ones are refused.
	p.Set(Cut)
	if _, err := roundTrip(c, r, "c", time.Second); err == nil {
		t.Fatal("cut link answered")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		c2.SetDeadline(time.Now().Add(time.Second))
		if _, err := c2.Read(make([]byte, 1)); err == nil {
			t.Fatal("new connection through a cut link stayed open")
		}
	}
	p.Set(Up)
	c3, err := net.Dial("tcp", p.Addr())
	check.NoError(t, err)
	got, err = roundTrip(c3, bufio.NewReader(c3), "d", time.Second)
	check.NoError(t, err)
	check.Equal(t, got, "d\n")
}
