package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"time"

	"golang.org/x/time/rate"
)

// DefaultLeafConnectRate is how many site uplinks a hub admits to its TLS
// handshake per second (in bursts of as many) unless Config says otherwise.
//
// Each leafnode connect costs the hub a walk of every subscription of the
// tenant account (nats-server's initLeafNodeSmapAndSendSubs: 12 per site,
// 4 per mirror consumer), so a fleet reconnecting at once is O(sites²).
// Admitted all at once, at 1,000 sites every handshake progressed at a
// thousandth of the hub's CPU and they passed their 10 s deadlines
// together: 16,159 connects in 3 minutes (5,598 authentication timeouts,
// 7,787 handshakes abandoned) and the fleet never settled. Admitted at a
// bounded rate, those admitted finish and the rest retry (each leaf every
// 0.25-0.75 s) until their turn; a refused handshake costs a ClientHello.
const DefaultLeafConnectRate = 50

// admitWait is how long a handshake waits for its turn before it is
// refused: well inside the leaf's and the hub's 10 s TLS deadlines.
const admitWait = 2 * time.Second

var errHubBusy = errors.New("hub: too many site uplinks connecting; retry")

// admitLeafHandshakes makes the leafnode listener's TLS config admit at
// most perSecond handshakes a second: the rest wait up to admitWait for a
// turn and are then refused before any key exchange.
func admitLeafHandshakes(tc *tls.Config, perSecond int) {
	lim := rate.NewLimiter(rate.Limit(perSecond), perSecond)
	prev := tc.GetConfigForClient
	tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		ctx, cancel := context.WithTimeout(hello.Context(), admitWait)
		defer cancel()
		if err := lim.Wait(ctx); err != nil {
			return nil, errHubBusy
		}
		if prev != nil {
			return prev(hello)
		}
		return nil, nil
	}
}
