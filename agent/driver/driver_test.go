package driver_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
)

// A stream that keeps breaking is reconnected with a doubling pause, and
// follow learns it is a reconnect from the second run on.
func TestReconnectBacksOff(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var again []bool
	var waits []time.Duration
	follow := func(_ context.Context, reconnect bool) error {
		again = append(again, reconnect)
		return errors.New("stream closed")
	}
	ended := func(_ error, in time.Duration) {
		waits = append(waits, in)
		if len(waits) == 3 {
			cancel()
		}
	}
	if err := driver.Reconnect(ctx, follow, ended); err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}; !slices.Equal(waits, want) {
		t.Fatalf("pauses %v, want %v", waits, want)
	}
	if want := []bool{false, true, true}; !slices.Equal(again, want) {
		t.Fatalf("reconnect flags %v, want %v", again, want)
	}
}

type fake struct{ plan driver.Plan }

func (f fake) Name() string { return "fake" }
func (f fake) Plan(context.Context, *blueprint.Blueprint) (driver.Plan, error) {
	return f.plan, nil
}
func (f fake) Report(context.Context) []driver.Resource {
	return []driver.Resource{{ID: "file:a", State: "ok"}, {ID: "file:b", State: "ok"}}
}

// Filter keeps the changes Keep refuses out of the plan, lets Mark rewrite
// the report and leaves the inner driver's plan as it was.
func TestFilterKeepsAndMarks(t *testing.T) {
	inner := fake{plan: driver.Plan{{ID: "file:a", Op: driver.Update}, {ID: "file:b", Op: driver.Update}}}
	d := driver.Filter{
		Keep: func(_ time.Time, c driver.Change) bool { return c.ID != "file:b" },
		Mark: func(_ time.Time, rs []driver.Resource) []driver.Resource {
			for i := range rs {
				if rs[i].ID == "file:b" {
					rs[i].State = "held"
				}
			}
			return rs
		},
	}.Wrap(inner)
	p, err := d.Plan(context.Background(), nil)
	if err != nil || len(p) != 1 || p[0].ID != "file:a" {
		t.Fatalf("plan %v (err %v), want only the change to file:a", p, err)
	}
	if len(inner.plan) != 2 || inner.plan[1].ID != "file:b" {
		t.Fatalf("the inner plan changed: %v", inner.plan)
	}
	rs := d.(driver.Reporter).Report(context.Background())
	if len(rs) != 2 || rs[1].State != "held" || rs[0].State != "ok" {
		t.Fatalf("report %+v, want file:b held and file:a ok", rs)
	}
	if d.Name() != "fake" {
		t.Fatalf("name %q, want the inner driver's", d.Name())
	}
}
