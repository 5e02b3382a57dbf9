package bundle

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/hubtest"
	"github.com/alpha-edge/alpha/streams"
)

// An uplink export whose reader got nothing for a while stops without an
// error only when nothing is left to read; messages that are there but did
// not come (a stalled site server) fail the export, so the uplink is never
// moved past what the stick does not hold. Before, any 5 s of silence
// ended the export as "the rest was deleted".
func TestRestDeletedOnlyWhenNothingIsLeft(t *testing.T) {
	ctx := context.Background()
	_, nc := hubtest.Start(t)
	js, err := jetstream.NewWithDomain(nc, streams.HubDomain)
	check.NoError(t, err)
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "UP", Subjects: []string{"up.>"}})
	check.NoError(t, err)
	for range 10 {
		_, err := js.Publish(ctx, "up.a", []byte("x"))
		check.NoError(t, err)
	}
	for seq := uint64(6); seq <= 8; seq++ {
		check.NoError(t, s.DeleteMsg(ctx, seq))
	}
	const unknown = ^uint64(0)
	for _, c := range []struct {
		first, pending uint64
		want           bool
	}{
		{6, unknown, false}, // 9 and 10 are there: a stall
		{11, unknown, true}, // nothing from 11 on
		{1, 3, false},       // the last read had 3 after it
		{1, 0, true},        // the last read was the last
	} {
		got, err := restDeleted(ctx, s, c.first, c.pending)
		check.NoError(t, err)
		if got != c.want {
			t.Errorf("first %d, pending %d: rest deleted %v, want %v", c.first, c.pending, got, c.want)
		}
	}
	check.NoError(t, s.DeleteMsg(ctx, 9))
	check.NoError(t, s.DeleteMsg(ctx, 10))
	if got, err := restDeleted(ctx, s, 6, unknown); err != nil || !got {
		t.Errorf("6..10 deleted: rest deleted %v (%v), want true", got, err)
	}
}
