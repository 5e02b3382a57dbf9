package natsutil

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestDenialsLogOncePerSubjectThenRateLimited(t *testing.T) {
	var buf bytes.Buffer
	news := 0
	d := &Denials{Log: slog.New(slog.NewTextHandler(&buf, nil)), OnNew: func() { news++ }}
	h := d.Handler(nil)
	t0 := time.Now()
	err := fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "a.b"`)
	h(nil, nil, err) // as nats.go reports it
	for i := range 100 {
		d.Note(err.Error(), t0.Add(time.Duration(i)*time.Millisecond))
	}
	d.Note(`Permissions Violation for Publish to "c"`, t0)
	if n := strings.Count(buf.String(), "level=WARN"); n != 2 {
		t.Fatalf("%d WARN lines for 101 denials of one subject and 1 of another, want 2:\n%s", n, &buf)
	}
	if news != 2 {
		t.Fatalf("OnNew called %d times, want 2", news)
	}
	d.Note(err.Error(), t0.Add(LogEvery+time.Second))
	if !strings.Contains(buf.String(), "times=101") {
		t.Fatalf("the minute's count was not logged:\n%s", &buf)
	}
	got := d.Recent(t0.Add(LogEvery + time.Second))
	if len(got) != 2 || got[0] != `Permissions Violation for Publish to "a.b"` {
		t.Fatalf("recent %q", got)
	}
	if got := d.Recent(t0.Add(LogEvery + Window + 2*time.Second)); len(got) != 0 {
		t.Fatalf("denials older than the window still reported: %q", got)
	}
}
