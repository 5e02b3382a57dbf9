package ingest

import (
	"context"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/streams"
)

// The reset gateway. A site's mirrors resume their pre-created durable
// consumers at the hub with CONSUMER.RESET, the only JetStream API a site
// calls. Its account once imported that API subject from the tenant's
// straight from JetStream, and JetStream trusts the subject it is handed;
// but nats-server hands a message from a leafnode connection whose reply
// is $JS.ACK.…@<subject> to its subscriber under <subject>
// (streams.IsJSAckReply): a site sent a reset of its own consumer with the
// reply $JS.ACK.1.2.3.4.5.6.7@$JS.API.STREAM.DELETE.KV_cloud, and the
// tenant's cloud bucket was gone (accounts/TestSiteCannotRedirectRequests).
// So a site's account imports its resets from here: the gateway drops a
// request with such a reply (no other reply can change the subject), then
// forwards a reset of a mirror consumer, on the tenant's own connection,
// and relays JetStream's answer.
const (
	resetTimeout = 5 * time.Second
	// resetWorkers bounds the resets in flight: a reconnect storm sends
	// three per site.
	resetWorkers = 64
)

func (s *Service) serveResets() (*nats.Subscription, error) {
	sem := make(chan struct{}, resetWorkers)
	return s.nc.QueueSubscribe(streams.ResetRoot+".*.*", streams.ResetQueue, func(m *nats.Msg) {
		if m.Reply == "" || streams.IsJSAckReply(m.Reply) {
			s.refused("reset", m)
			return
		}
		tok := strings.Split(m.Subject, ".")
		stream, durable := tok[len(tok)-2], tok[len(tok)-1]
		if !isMirrored(stream) || !strings.HasPrefix(durable, "mirror-") {
			s.refused("reset", m)
			return
		}
		select {
		case sem <- struct{}{}:
		default:
			return // the mirror asks again
		}
		go func() {
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), resetTimeout)
			defer cancel()
			req := nats.NewMsg("$JS.API.CONSUMER.RESET." + stream + "." + durable)
			req.Data = m.Data
			resp, err := s.nc.RequestMsgWithContext(ctx, req)
			if err != nil {
				s.log.Debug("reset gateway: no answer from JetStream", "stream", stream, "consumer", durable, "err", err)
				return
			}
			out := nats.NewMsg(m.Reply)
			out.Header, out.Data = resp.Header, resp.Data
			if err := s.nc.PublishMsg(out); err != nil {
				s.log.Debug("reset gateway: answering", "err", err)
			}
		}()
	})
}

func isMirrored(stream string) bool {
	for _, st := range streams.Mirrored() {
		if st.Stream() == stream {
			return true
		}
	}
	return false
}

// refused logs a request a site redirected or made up, at most once a
// minute.
func (s *Service) refused(what string, m *nats.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.now().Sub(s.lastRefused) < time.Minute {
		return
	}
	s.lastRefused = s.now()
	s.log.Warn("refused a site request that tried to redirect it (a JetStream ack reply) or named no mirror consumer",
		"kind", what, "subject", m.Subject, "reply", m.Reply)
}
