package hub_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// A hub's uplink streams made before limits and the ingest existed (no
// byte limit, status with DiscardNew, no subjects) get the limits and the
// ingest's subjects at the next start, sources (air-gap bundles) kept.
func TestBootstrapLimitsUpgradesStreams(t *testing.T) {
	ctx := context.Background()
	h := stack.Hub(t)
	nc, err := h.Connect()
	check.NoError(t, err)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for _, name := range streams.Uplinks() {
		check.NoError(t, js.DeleteStream(ctx, name))
		old := streams.HubUplinkConfig(name, 1, streams.HubLimits{})
		old.MaxBytes = -1
		if name == streams.StatusStream {
			old.Discard = jetstream.DiscardNew
		}
		old.Subjects, old.SubjectTransform = []string{"alpha.hub.none." + name}, nil
		old.Sources = []*jetstream.StreamSource{{Name: "BUNDLE_" + name + "_s"}}
		_, err := js.CreateStream(ctx, old)
		check.NoError(t, err)
	}
	lim := streams.HubLimits{TelemetryBytes: 64 << 20, EventsBytes: 32 << 20, StatusBytes: 16 << 20, LogsBytes: 8 << 20}
	check.NoError(t, hub.BootstrapLimits(ctx, js, 1, &lim))
	want := map[string]int64{streams.TelemetryStream: lim.TelemetryBytes, streams.EventsStream: lim.EventsBytes, streams.StatusStream: lim.StatusBytes,
		streams.LogsStream: lim.LogsBytes}
	for _, name := range streams.Uplinks() {
		s, err := js.Stream(ctx, name)
		check.NoError(t, err)
		info, err := s.Info(ctx)
		check.NoError(t, err)
		check.Equal(t, info.Config.MaxBytes, want[name])
		check.Equal(t, info.Config.Discard, jetstream.DiscardOld)
		check.Equal(t, len(info.Config.Sources), 1)
		check.Equal(t, strings.Join(info.Config.Subjects, " "), strings.Join(streams.HubUplinkConfig(name, 1, lim).Subjects, " "))
		check.Equal(t, info.Config.SubjectTransform.Destination, ">")
	}
	// Plain Bootstrap (tenant-add, a CLI) leaves them as they are.
	check.NoError(t, hub.Bootstrap(ctx, js, 1))
	s, err := js.Stream(ctx, streams.TelemetryStream)
	check.NoError(t, err)
	info, err := s.Info(ctx)
	check.NoError(t, err)
	check.Equal(t, info.Config.MaxBytes, lim.TelemetryBytes)
}
