package maintenance

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

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/streams"
)

// inForce says why holds does not hold the node under reason now.
func inForce(holds *Holds, reason string) error {
	h, ok := holds.Current()
	if !ok || !strings.Contains(h.Reason, reason) || !h.Active(time.Now()) {
		return fmt.Errorf("hold is %+v (held: %v), want %q in force", h, ok, reason)
	}
	return nil
}

// released says why holds still holds the node now.
func released(holds *Holds) error {
	if h, ok := holds.Current(); ok && h.Active(time.Now()) {
		return fmt.Errorf("hold %+v still in force", h)
	}
	return nil
}

// seenThenDown is an agent that saw hold reason for d in the bucket kv of
// the leaf js, kept it in dir, and went down.
func seenThenDown(t *testing.T, reason string, d time.Duration) (jetstream.JetStream, jetstream.KeyValue, string, Hold) {
	t.Helper()
	ctx := context.Background()
	js := leaf(t)
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)
	h, err := NewHold("s1", "n1", time.Now(), d, reason, "ops", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, h))
	dir := t.TempDir()
	run, stop := context.WithCancel(ctx)
	check.NoError(t, inForce(watch(t, run, kv, dir, nil, nil), reason))
	stop()
	return js, kv, dir, h
}

// TestHoldSurvivesRestartWithoutBucket: the agent restarts while the holds
// bucket is deleted (by mistake, or by someone who wants the agent's hands
// back on a held node). The hold the node saw is in force from its disk at
// once, before the bucket is back; a put in the bucket made again replaces
// it.
func TestHoldSurvivesRestartWithoutBucket(t *testing.T) {
	ctx := context.Background()
	js, kv, dir, _ := seenThenDown(t, "debugging the meter", time.Hour)
	log := slog.New(slog.NewTextHandler(&check.Buffer{}, nil))

	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	// Started again: in force before any watch, and after one that cannot
	// start.
	holds, err := Load(dir, "s1", "n1", log)
	check.NoError(t, err)
	check.NoError(t, inForce(holds, "debugging the meter"))
	st, err := os.Stat(filepath.Join(dir, StateFile))
	check.NoError(t, err)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("%s has mode %v, want 0600", StateFile, st.Mode().Perm())
	}
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	check.NoError(t, err)
	var saved holdState
	check.NoError(t, json.Unmarshal(b, &saved))
	if saved.Version != stateVersion || saved.Key != "s1.n1" || saved.Hold == nil {
		t.Fatalf("%s holds %s", StateFile, b)
	}
	run2, stop2 := context.WithCancel(ctx)
	defer stop2()
	check.NoError(t, holds.Watch(run2, kv, nil))
	check.NoError(t, inForce(holds, "debugging the meter"))

	// The bucket back with a newer hold: that one is in force.
	kv, err = EnsureBucket(ctx, js)
	check.NoError(t, err)
	newer, err := NewHold("s1", "n1", time.Now(), 2*time.Hour, "newer", "ops", nil)
	check.NoError(t, err)
	check.NoError(t, Put(ctx, kv, newer))
	check.For(t, 30*time.Second, 50*time.Millisecond, func() error { return inForce(holds, "newer") })
}

// TestHoldSurvivesRestartWithBucketEmptied: the bucket is deleted and made
// again empty while the agent is down. After the restart the hold is still
// in force; an explicit release ends it, and that release is kept too.
func TestHoldSurvivesRestartWithBucketEmptied(t *testing.T) {
	ctx := context.Background()
	js, _, dir, _ := seenThenDown(t, "debugging the meter", time.Hour)

	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)
	run2, stop2 := context.WithCancel(ctx)
	holds := watch(t, run2, kv, dir, nil, nil)
	check.NoError(t, inForce(holds, "debugging the meter"))

	check.NoError(t, Release(ctx, kv, "s1", "n1"))
	// Seen and kept on disk: the file is written after the hold changes
	// in memory (a CI run read it in between).
	check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
		if err := released(holds); err != nil {
			return err
		}
		kept, err := Load(dir, "s1", "n1", nil)
		if err != nil {
			return err
		}
		return released(kept)
	})
	stop2()

	// Released stays released across a restart without the bucket.
	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	holds, err = Load(dir, "s1", "n1", nil)
	check.NoError(t, err)
	check.NoError(t, released(holds))
}

// TestHoldExpiredWhileDown: a hold that ended while the agent was down is
// not in force after the restart, bucket or not.
func TestHoldExpiredWhileDown(t *testing.T) {
	ctx := context.Background()
	js, _, dir, short := seenThenDown(t, "short", 2*time.Second)
	check.NoError(t, js.DeleteKeyValue(ctx, streams.HoldsBucket))
	check.For(t, 10*time.Second, 50*time.Millisecond, func() error {
		if time.Now().Before(short.Expiry()) {
			return fmt.Errorf("hold not expired yet")
		}
		return nil
	})

	holds, err := Load(dir, "s1", "n1", nil)
	check.NoError(t, err)
	if h, ok := holds.Current(); ok {
		t.Fatalf("expired hold %+v loaded", h)
	}
}

// TestHoldStateCorruptFailsSafe: a state file that cannot be read or
// understood holds the node for MaxHold, with a reason naming the file,
// logged; the deadline is not pushed back by a restart, and a release in
// the bucket ends it. A symlink planted as the file is not followed out of
// the state directory.
func TestHoldStateCorruptFailsSafe(t *testing.T) {
	ctx := context.Background()
	js := leaf(t)
	kv, err := EnsureBucket(ctx, js)
	check.NoError(t, err)

	outside := filepath.Join(t.TempDir(), "elsewhere.json")
	releasedState := `{"version":1,"key":"s1.n1","released":"2026-01-01T00:00:00Z"}`
	check.NoError(t, os.WriteFile(outside, []byte(releasedState), 0o600))

	for _, tc := range []struct {
		name, content, symlink string
	}{
		{name: "garbage", content: `{"version":1,"hold":{"reas`},
		{name: "version", content: `{"version":2,"key":"s1.n1"}`},
		{name: "unbounded", content: `{"version":1,"key":"s1.n1","hold":{"reason":"x","until":"2999-01-01T00:00:00Z"}}`},
		{name: "symlink", symlink: outside},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, StateFile)
			if tc.symlink != "" {
				check.NoError(t, os.Symlink(tc.symlink, path))
			} else {
				check.NoError(t, os.WriteFile(path, []byte(tc.content), 0o600))
			}
			logged := &check.Buffer{}
			log := slog.New(slog.NewTextHandler(logged, nil))
			holds, err := Load(dir, "s1", "n1", log)
			check.NoError(t, err)
			check.NoError(t, inForce(holds, path))
			h, _ := holds.Current()
			if d := time.Until(h.Expiry()); d < MaxHold-time.Minute || len(h.Resources) != 0 {
				t.Fatalf("fail-safe hold %+v ends in %v, want the whole node for %v", h, d, MaxHold)
			}
			if !strings.Contains(logged.String(), "hold state unreadable") {
				t.Fatalf("not logged:\n%s", logged.String())
			}
			again, err := Load(dir, "s1", "n1", log)
			check.NoError(t, err)
			if h2, ok := again.Current(); !ok || !h2.Expiry().Equal(h.Expiry()) {
				t.Fatalf("after a restart: %+v (held: %v), want the same hold until %v", h2, ok, h.Expiry())
			}
			if b, _ := os.ReadFile(outside); string(b) != releasedState {
				t.Fatalf("a write left the state directory: %s now holds %s", outside, b)
			}

			// An operator's release ends it.
			check.NoError(t, Release(ctx, kv, "s1", "n1"))
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			check.NoError(t, again.Watch(wctx, kv, nil))
			check.NoError(t, released(again))
		})
	}
}
