package scale_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/scale"
	"github.com/alpha-edge/alpha/streams"
)

// TestFleet: every node of a small fleet acknowledges its own put, the
// hub's status bucket shows it, and a hub restart is survived.
func TestFleet(t *testing.T) {
	f := scale.Start(t, scale.Options{Sites: 3, Nodes: 2, Telemetry: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	puts := f.PutAll(ctx, "one")
	check.Equal(t, len(puts), 6)
	_, err := f.WaitApplied(ctx, puts)
	check.NoError(t, err)
	_, err = f.WaitStatus(ctx, puts)
	check.NoError(t, err)
	for _, p := range puts {
		check.Equal(t, p.Node.Applied(), p.Revision)
	}
	// The nodes' telemetry reaches the hub through the sites' sources.
	_, js := f.Hub.Admin(scale.Tenant)
	check.For(t, time.Minute, 100*time.Millisecond, func() error {
		for _, s := range f.Sites {
			st, err := js.Stream(ctx, streams.TelemetryStream)
			if err != nil {
				return err
			}
			info, err := st.Info(ctx, jetstream.WithSubjectFilter(streams.TelemetrySubjects(s.ID)))
			if err != nil {
				return err
			}
			if len(info.State.Subjects) == 0 {
				return fmt.Errorf("no telemetry of site %s at the hub", s.ID)
			}
		}
		return nil
	})
	f.Hub.Restart()
	f.WaitConnected(time.Minute)
	puts = f.PutAll(ctx, "two")
	_, err = f.WaitApplied(ctx, puts)
	check.NoError(t, err)
	_, err = f.WaitStatus(ctx, puts)
	check.NoError(t, err)
}
