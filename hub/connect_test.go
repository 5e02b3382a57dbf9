package hub

import (
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/nats-io/nats.go"
)

// Only what a starved hub causes is retried: a wrong credential fails the
// hub's start at once, naming itself.
func TestConnectRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{io.ErrClosedPipe, true},
		{fmt.Errorf("tenant acme: %w", io.ErrClosedPipe), true},
		{fmt.Errorf("read pipe: %w", os.ErrDeadlineExceeded), true},
		{nats.ErrTimeout, true},
		{fmt.Errorf("nats: expected 'PONG', got 'PING'"), true},
		{nats.ErrAuthExpired, false},
		{nats.ErrAuthorization, false},
		{fmt.Errorf("nats: Authorization Violation"), false},
		{nats.ErrNoServers, false},
	} {
		if got := connectRetryable(c.err); got != c.want {
			t.Errorf("connectRetryable(%q) = %v, want %v", c.err, got, c.want)
		}
	}
}
