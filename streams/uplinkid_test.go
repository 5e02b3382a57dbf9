package streams

import (
	"testing"
	"time"
)

// The made-up ids keep the form the forwarder has always sent, so a
// message sent before an upgrade and again after it is still dropped as a
// duplicate; an id of the message's own is never replaced.
func TestUplinkIDs(t *testing.T) {
	created := time.Unix(1700000000, 123456789)
	for _, c := range []struct {
		stream, own string
		seq         uint64
		want        string
	}{
		{TelemetryStream, "", 42, "s1:TELEMETRY:1700000000123456789:42"},
		{EventsStream, "", 1, "s1:EVENTS:1700000000123456789:1"},
		{LogsStream, "", 7, "s1:LOGS:1700000000123456789:7"},
		{TelemetryStream, "n1.boot.5", 42, "n1.boot.5"},
		{StatusStream, "", 3, ""},
		{StatusStream, "own", 3, "own"},
	} {
		if got := NewUplinkIDs("s1", c.stream, created).ID(c.own, c.seq); got != c.want {
			t.Errorf("%s seq %d own %q: id %q, want %q", c.stream, c.seq, c.own, got, c.want)
		}
	}
}
