package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/natsutil"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// startLeaf runs a JetStream server on port (-1: one of its own choosing;
// a restart passes the port it bound before).
func startLeaf(t *testing.T, port int, dir string) *server.Server {
	t.Helper()
	var s *server.Server
	check.Rebind(t, func() (err error) {
		s, err = server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
			JetStreamDomain: "s1", StoreDir: dir, NoLog: true, NoSigs: true})
		if err != nil {
			return err
		}
		return natsutil.Start(s, slog.New(slog.NewTextHandler(io.Discard, nil)))
	})
	return s
}

func repair(i int) engine.Repair {
	c := driver.NewChange(fmt.Sprintf("sysctl:k%d", i), driver.Update, "k is 0, want 1", nil)
	c.Found, c.Want = "0", "1"
	return engine.Repair{Driver: "sysctl", Change: c, At: time.Date(2026, 11, 23, 12, 0, i, 0, time.UTC)}
}

func TestPublishesAndBuffersWhileLeafIsDown(t *testing.T) {
	dir := t.TempDir()
	s := startLeaf(t, -1, dir)
	url := s.ClientURL()
	port := s.Addr().(*net.TCPAddr).Port
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.s1.>"},
		Storage: jetstream.FileStorage, Duplicates: time.Hour})
	check.NoError(t, err)

	p := New(js, "s1", "n1", nil, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })

	p.OnRepair(repair(1))
	bad := repair(2)
	bad.Err = errors.New("permission denied")
	p.OnRepair(bad)
	p.OnRepair(bad) // the same failure retried is not a new event
	check.For(t, 3*time.Second, 10*time.Millisecond, func() error {
		if n := p.Pending(); n != 0 {
			return fmt.Errorf("%d pending", n)
		}
		return nil
	})

	// The leaf goes away; events wait in memory, then all arrive once.
	s.Shutdown()
	s.WaitForShutdown()
	for i := 3; i <= 7; i++ {
		p.OnRepair(repair(i))
	}
	if p.Pending() == 0 {
		t.Fatal("events should be buffered while the leaf is down")
	}
	s = startLeaf(t, port, dir)
	t.Cleanup(s.Shutdown)
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if n := p.Pending(); n != 0 {
			return fmt.Errorf("%d pending", n)
		}
		return nil
	})

	st, err := js.Stream(ctx, "EVENTS")
	check.NoError(t, err)
	info, err := st.Info(ctx)
	check.NoError(t, err)
	check.Equal(t, info.State.Msgs, uint64(7))
	msg, err := st.GetMsg(ctx, 2)
	check.NoError(t, err)
	check.Equal(t, msg.Subject, "events.s1.n1.drift")
	var ev Event
	check.NoError(t, json.Unmarshal(msg.Data, &ev))
	check.Equal(t, ev.Resource, "sysctl:k2")
	check.Equal(t, ev.Error, "permission denied")
	check.Equal(t, ev.Found, "0")
	check.Equal(t, ev.Want, "1")
	check.Equal(t, msg.Header.Get(jetstream.MsgIDHeader), ev.ID)

	recent, err := Recent(ctx, js, "EVENTS", "s1", "n1", time.Now().Add(-time.Hour), 0)
	check.NoError(t, err)
	check.Equal(t, len(recent), 7)
	check.Equal(t, recent[6].Resource, "sysctl:k7")
	recent, err = Recent(ctx, js, "EVENTS", "s1", "n1", time.Now().Add(-time.Hour), 3)
	check.NoError(t, err)
	check.Equal(t, len(recent), 3)
	check.Equal(t, recent[0].Resource, "sysctl:k5")
	none, err := Recent(ctx, js, "EVENTS", "s1", "other", time.Now().Add(-time.Hour), 0)
	check.NoError(t, err)
	check.Equal(t, len(none), 0)

	// A retry of a message that did land is dropped by the stream.
	_, err = js.Publish(ctx, msg.Subject, msg.Data, jetstream.WithMsgID(ev.ID))
	check.NoError(t, err)
	info, _ = st.Info(ctx)
	check.Equal(t, info.State.Msgs, uint64(7))
}

func TestBufferIsBounded(t *testing.T) {
	p := New(nil, "s1", "n1", nil, 3)
	for i := 0; i < 5; i++ {
		p.OnRepair(repair(i))
	}
	check.Equal(t, p.Pending(), 3)
	check.Equal(t, p.Dropped(), uint64(2))
}

func TestRepeatedFailureOnce(t *testing.T) {
	p := New(nil, "s1", "n1", nil, 10)
	bad := repair(1)
	bad.Err = errors.New("no such key")
	p.OnRepair(bad)
	p.OnRepair(bad)
	check.Equal(t, p.Pending(), 1)
	p.OnRepair(repair(1)) // fixed
	p.OnRepair(bad)       // and failing again: a new event
	check.Equal(t, p.Pending(), 3)
}

// Drift events queued while the leaf is down survive an agent crash: they
// are in the spool within about a second, and the next run (a new
// publisher on the same spool) delivers them once the leaf is back, then
// removes the spool.
func TestSpoolSurvivesCrash(t *testing.T) {
	dir := t.TempDir()
	s := startLeaf(t, -1, dir)
	port := s.Addr().(*net.TCPAddr).Port
	url := s.ClientURL()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	check.NoError(t, err)
	ctx := context.Background()
	_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "EVENTS", Subjects: []string{"events.s1.>"},
		Storage: jetstream.FileStorage, Duplicates: time.Hour})
	check.NoError(t, err)
	s.Shutdown()
	s.WaitForShutdown()

	file := filepath.Join(t.TempDir(), "events-spool.json")
	p1 := New(js, "s1", "n1", nil, 100)
	check.NoError(t, p1.Spool(file))
	ctx1, crash := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { p1.Run(ctx1); close(done) }()
	for i := 1; i <= 4; i++ {
		p1.OnRepair(repair(i))
	}
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		var evs []Event
		check.NoError(t, json.Unmarshal(data, &evs))
		if len(evs) != 4 {
			return fmt.Errorf("%d events spooled, want 4", len(evs))
		}
		return nil
	})
	// A crash: the process is gone, nothing more is written. (Stopping Run
	// writes the same content again; what matters is that it was there.)
	crash()
	<-done

	s = startLeaf(t, port, dir)
	t.Cleanup(s.Shutdown)
	p2 := New(js, "s1", "n1", nil, 100)
	check.NoError(t, p2.Spool(file))
	check.Equal(t, p2.Pending(), 4)
	ctx2, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); p2.Run(ctx2) }()
	t.Cleanup(func() { stop(); wg.Wait() })
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("spool still there: %v (pending %d)", err, p2.Pending())
		}
		return nil
	})
	recent, err := Recent(ctx, js, "EVENTS", "s1", "n1", time.Now().Add(-24*time.Hour), 0)
	check.NoError(t, err)
	var got []string
	for _, ev := range recent {
		got = append(got, ev.Resource)
	}
	check.Equal(t, fmt.Sprint(got), "[sysctl:k1 sysctl:k2 sysctl:k3 sysctl:k4]")
}
