package logs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/leaf"
	"github.com/alpha-edge/alpha/streams"
)

// quiet drops the servers' and the shipper's logs (the stack package
// would import the agent, which imports this package).
var quiet = slog.New(slog.DiscardHandler)

// fakeJournal is a journalctl that prints entries c1..c10 of a.service
// after the cursor it is given (--after-cursor=cN), notes its arguments,
// and then follows (sleeps). Entry 5 is debug.
const fakeJournal = `#!/bin/sh
echo "$@" >> "$ARGS"
start=0
for a in "$@"; do case "$a" in --after-cursor=c*) start=${a#--after-cursor=c};; esac; done
i=$start
while [ $i -lt 10 ]; do
  i=$((i+1)); p=6; [ $i -eq 5 ] && p=7
  echo "{\"__CURSOR\":\"c$i\",\"__REALTIME_TIMESTAMP\":\"1700000000000$i\",\"_SYSTEMD_UNIT\":\"a.service\",\"PRIORITY\":\"$p\",\"MESSAGE\":\"line $i\"}"
done
exec sleep 1000
`

// TestJournalResumesAfterAckedCursor: the shipper follows the journal
// through journalctl's JSON, keeps the level floor, and after a restart
// asks journalctl for the entries after the last cursor the site acked:
// nothing read twice, nothing skipped.
func TestJournalResumesAfterAckedCursor(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "journalctl")
	check.NoError(t, os.WriteFile(script, []byte(fakeJournal), 0o755))
	argsFile := filepath.Join(dir, "args")
	t.Setenv("ARGS", argsFile)

	h, err := hub.Start(context.Background(), hub.Config{StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", LeafListen: "127.0.0.1:-1", Log: quiet})
	check.NoError(t, err)
	t.Cleanup(h.Shutdown)
	l, err := leaf.Start(context.Background(), leaf.Config{Site: "s1", HubURLs: []string{h.LeafURL()}, StoreDir: t.TempDir(), Listen: "127.0.0.1:-1", Log: quiet})
	check.NoError(t, err)
	t.Cleanup(l.Shutdown)
	nc, err := nats.Connect(l.ClientURL())
	check.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithDomain(nc, "s1")
	check.NoError(t, err)
	state := filepath.Join(dir, "positions.json")
	var cur *Shipper
	run := func() func() {
		s, err := New(Config{Conn: nc, Site: "s1", Node: "n1", Log: quiet, StateFile: state, Journal: []string{script}})
		check.NoError(t, err)
		cur = s
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.Run(ctx, Selection{Units: []string{"a.service"}}); close(done) }()
		return func() { cancel(); <-done }
	}
	lines := func() ([]string, error) {
		st, err := js.Stream(context.Background(), streams.LogsStream)
		if err != nil {
			return nil, err
		}
		var out []string
		info, err := st.Info(context.Background())
		if err != nil {
			return nil, err
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(context.Background(), seq)
			if err != nil {
				return nil, err
			}
			var l streams.LogLine
			check.NoError(t, json.Unmarshal(m.Data, &l))
			if l.Source != "a.service" || l.Kind != streams.LogUnit || m.Subject != "logs.s1.n1.unit.a_service" {
				return nil, fmt.Errorf("line %+v on %s", l, m.Subject)
			}
			out = append(out, l.Text)
		}
		return out, nil
	}
	want := "line 1,line 2,line 3,line 4,line 6,line 7,line 8,line 9,line 10" // line 5 is debug
	stop := run()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		got, err := lines()
		if err != nil {
			return err
		}
		if strings.Join(got, ",") != want {
			return fmt.Errorf("LOGS holds %q", got)
		}
		return nil
	})
	// The position moves once the shipper has taken the last line's ack,
	// which may come after the line is in the stream.
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if p := cur.Position("journal"); p != "c10" {
			return fmt.Errorf("journal position %q, want c10", p)
		}
		return nil
	})
	stop()
	b, err := os.ReadFile(state)
	check.NoError(t, err)
	if !strings.Contains(string(b), `"positions":{"journal":"c10"}`) {
		t.Fatalf("positions after the first run: %s", b)
	}

	stop = run()
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		b, _ := os.ReadFile(argsFile)
		if n := strings.Count(string(b), "\n"); n < 2 {
			return fmt.Errorf("journalctl ran %d times", n)
		}
		return nil
	})
	stop()
	b, err = os.ReadFile(argsFile)
	check.NoError(t, err)
	runs := strings.Split(strings.TrimSpace(string(b)), "\n")
	if !strings.Contains(runs[0], "--boot") || strings.Contains(runs[0], "--after-cursor") {
		t.Errorf("first run: journalctl %s", runs[0])
	}
	if !strings.Contains(runs[1], "--after-cursor=c10") || !strings.Contains(runs[1], "--unit=a.service") || !strings.Contains(runs[1], "--output=json") {
		t.Errorf("second run: journalctl %s", runs[1])
	}
	got, err := lines()
	check.NoError(t, err)
	check.Equal(t, strings.Join(got, ","), want)
}

func TestParseEntry(t *testing.T) {
	// Not valid UTF-8: journalctl writes MESSAGE as an array of bytes.
	p, err := parseEntry([]byte(`{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1700000000123456","PRIORITY":"3","UNIT":"b.service","_SYSTEMD_UNIT":"init.scope","MESSAGE":[104,105,255,10]}`))
	check.NoError(t, err)
	check.Equal(t, p.message(), "hi\uFFFD")
	check.Equal(t, p.level(), "err")
	check.Equal(t, p.unit([]string{"b.service"}), "b.service") // systemd's line about the unit
	check.Equal(t, p.ts, time.UnixMicro(1700000000123456).UTC())
	check.Equal(t, journalID("n1", "s=1;i=2"), journalID("n1", "s=1;i=2"))
	if journalID("n1", "s=1;i=2") == journalID("n1", "s=1;i=3") {
		t.Fatal("two cursors, one id")
	}
	_, err = parseEntry([]byte(`{"MESSAGE":"no cursor"}`))
	if err == nil {
		t.Fatal("an entry without a cursor was accepted")
	}
}

func TestGuessLevel(t *testing.T) {
	for text, want := range map[string]string{
		`level=warn msg="disk slow"`:          "warning",
		"[ERROR] cannot bind":                 "err",
		"2024/01/02 10:00:00 INFO: listening": "info",
		"FATAL out of memory":                 "emerg",
		"GET / 200":                           "info",
		"request done, no error found here":   "info",
		"debug: cache hit":                    "debug",
	} {
		check.Equal(t, guessLevel(text), want)
	}
}

func TestBucket(t *testing.T) {
	b := bucket{rate: 10, burst: 20}
	now := time.Now()
	kept := 0
	for range 100 {
		if b.take(now) {
			kept++
		}
	}
	check.Equal(t, kept, 20) // the burst
	for range 100 {
		if b.take(now.Add(time.Second)) {
			kept++
		}
	}
	check.Equal(t, kept, 30) // and 10 more a second later
}
