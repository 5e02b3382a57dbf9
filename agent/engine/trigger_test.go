package engine_test

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// A pass can be traced to what asked for it: the reason reaches the log.
func TestTriggerLogsReason(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e, err := engine.New(engine.Config{StateDir: t.TempDir(), Log: log})
	check.NoError(t, err)
	e.Trigger("containers: died web")
	if !strings.Contains(buf.String(), `reason="containers: died web"`) {
		t.Fatalf("the log does not carry the reason; it has:\n%s", buf.String())
	}
}
