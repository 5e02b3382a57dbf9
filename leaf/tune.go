package leaf

import (
	"time"
	_ "unsafe" // for go:linkname

	_ "github.com/nats-io/nats-server/v2/server"
)

// srcDurableConsumerWaitTime is how long a mirror bound to a durable
// consumer waits for the hub to answer its reset request (5 s upstream).
// A leaf restarted offline sends that request into the void; if the uplink
// returns while it waits, catch-up is delayed by the rest of the wait, which
// we measured at up to 5 s. A short wait is safe: on a timeout the server
// retries as soon as the durable's heartbeat shows the hub is back. It must
// still exceed the uplink's round trip (a 300 ms satellite link answers in
// well under 1.5 s), or the mirror would never bind.
// Measured: a leaf restarted offline caught up 5.2 s after restore with the
// upstream value, 0.3-2.3 s with this one; the rest is the server's fixed 2 s
// gap between two setup requests.
//
// Shorter still would not help: a mirror's next setup request goes out no
// sooner than 2 s after its last one (sourceConsumerRetryThreshold, a
// constant), whether that one timed out or not. So a restore within ~2.2 s
// after a request sent into the outage waits for the rest of those 2 s:
// BenchmarkCatchUpSiteRestarted measured 0.17-0.48 s, and 1.6 s for the
// restore that fell 0.7 s after such a request. resend.go now sends such a
// request again the moment the link returns, which removes both waits.
//
// There is no server option for it; remove this once there is one.
//
//go:linkname srcDurableConsumerWaitTime github.com/nats-io/nats-server/v2/server.srcDurableConsumerWaitTime
var srcDurableConsumerWaitTime time.Duration

func init() { srcDurableConsumerWaitTime = 1500 * time.Millisecond }
