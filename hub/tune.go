package hub

import (
	"time"
	_ "unsafe" // for go:linkname

	_ "github.com/nats-io/nats-server/v2/server"
)

// In a hub cluster every bucket, stream and consumer is a raft group. When
// the member leading one is SIGKILLed (or its machine dies) nobody tells
// the others: a follower notices only when its election timer runs out, 4
// to 9 s after the last heartbeat (sent every 1 s). Until then a put to a
// bucket whose leader died is refused, and a site's mirror consumer whose
// leader died delivers nothing, though the site itself moved to a survivor
// within 0.5 s. Measured (BenchmarkClusterFailover: the member holding the
// site's link killed, a put at a survivor → applied on the node, 6
// samples): 0.5 s when neither leader was on the killed member, 4.7-7.5 s
// when one was; p50 6.0 s.
//
// With heartbeats every 500 ms and an election after 1.5 to 2 s without
// one, a follower still needs three heartbeats in a row to go missing
// before it stands for election, and a dead leader is replaced within 2 s:
// the same benchmark measured p50 1.46 s, max 1.83 s (a second run of 8
// samples: p50 1.62 s, max 1.82 s). Heartbeats every
// 250 ms with elections after 1 to 1.5 s measured no better (p50 1.5 s,
// max 3.5 s: more split votes) at twice the heartbeats. The cost is twice
// the heartbeats of idle groups (one small message per group and follower
// every 500 ms); the members' idle CPU with one site stayed within this
// machine's noise (11.8% against 8.4-12% of a core, three members summed).
// A standalone hub or a leaf has no raft groups and is unaffected.
//
// There are no server options for these; remove this once there are.

//go:linkname raftHeartbeat github.com/nats-io/nats-server/v2/server.hbInterval
var raftHeartbeat time.Duration

//go:linkname minElection github.com/nats-io/nats-server/v2/server.minElectionTimeout
var minElection time.Duration

//go:linkname maxElection github.com/nats-io/nats-server/v2/server.maxElectionTimeout
var maxElection time.Duration

func init() {
	raftHeartbeat = 500 * time.Millisecond
	minElection = 1500 * time.Millisecond
	maxElection = 2 * time.Second
}
