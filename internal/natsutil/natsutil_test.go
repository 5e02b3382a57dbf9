package natsutil

import (
	"cmp"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// A port already in use is reported as such, not as "not ready".
func TestStartReportsAddressInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s, err := server.NewServer(&server.Options{ServerName: "busy", Host: "127.0.0.1", Port: port, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	err = Start(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		s.Shutdown()
		t.Fatal("started on a port in use")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error does not say why: %v", err)
	}
}

func TestStartReady(t *testing.T) {
	s, err := server.NewServer(&server.Options{ServerName: "free", Host: "127.0.0.1", Port: -1, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := Start(s, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
}

// ALPHA_NATS_LOG turns on the server's own debug and trace lines; unset,
// neither reaches a debug-level log.
func TestServerLogLevel(t *testing.T) {
	for _, c := range []struct {
		env          string
		debug, trace bool
	}{{"", false, false}, {"debug", true, false}, {"trace", true, true}, {"verbose", false, false}} {
		t.Run(cmp.Or(c.env, "unset"), func(t *testing.T) {
			t.Setenv("ALPHA_NATS_LOG", c.env)
			var buf strings.Builder
			var mu sync.Mutex
			log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
				mu.Lock()
				defer mu.Unlock()
				return buf.Write(p)
			}), &slog.HandlerOptions{Level: slog.LevelDebug}))
			s, err := server.NewServer(&server.Options{ServerName: "lvl", Host: "127.0.0.1", Port: -1, NoSigs: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := Start(s, log); err != nil {
				t.Fatal(err)
			}
			nc, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			// CONNECT and PING: the PONG comes after the server has logged both.
			if _, err := nc.Write([]byte("CONNECT {\"verbose\":false}\r\nPING\r\n")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4096)
			for got := ""; !strings.Contains(got, "PONG"); {
				n, err := nc.Read(b)
				if err != nil {
					t.Fatal(err)
				}
				got += string(b[:n])
			}
			nc.Close()
			s.Shutdown()
			mu.Lock()
			out := buf.String()
			mu.Unlock()
			if got := strings.Contains(out, "Client connection created"); got != c.debug {
				t.Errorf("debug line logged: %v, want %v", got, c.debug)
			}
			if got := strings.Contains(out, "<<- [CONNECT"); got != c.trace {
				t.Errorf("trace line logged: %v, want %v", got, c.trace)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
