package leaf

import (
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/alpha-edge/alpha/streams"
)

// Resending a mirror's reset lost in an outage.
//
// A mirror of the hub's stores asks the hub to reset its durable consumer
// (the site's place in the hub's stream) and waits for the answer (1.5 s at
// a leaf, leaf/tune.go). While the uplink is down it keeps asking now and
// then, and a request sent into the outage is lost. When the link returns
// while such a request is still awaited, nats-server does not ask again (it
// retries only mirrors with no request in flight): the mirror waits out its
// wait, then probes the consumer's deliveries, then asks again no sooner
// than 2 s after the lost request (sourceConsumerRetryThreshold, a
// constant). That was the tail of catching up after an outage: 1.4 to 1.6 s
// in two of five returns (BenchmarkFleetCatchUp45s), the others 0.35 s.
//
// When the link returns, the leaf sends each reset its mirrors still await
// again, once: the mirror still listens on the request's reply subject, a
// subscription of the leaf's own account that names the stream and the
// consumer. The request has no body, so subject and reply are all of it.
// The hub answers that reply and the mirror goes on at once. The leaf looks
// once per return, within 25 ms of it; nats-server's own request after a
// return comes 100-200 ms later, so it is not sent twice unless the leaf's
// loop runs that late (then the hub resets the consumer to the same place
// twice and the second answer goes unheard). A slow hub (a reconnect storm)
// gets at most the three resends per site it would have had as retries.

// resendWindow is how long after a link's return the leaf looks for the
// hub to listen again (its interest arrives just after the link).
const resendWindow = 5 * time.Second

// resetPoll is how often the uplink loop looks while the link is down: the
// delay between a link's return and the resend.
const resetPoll = 25 * time.Millisecond

// resendLostResets sends again the resets the site's mirrors await, once
// the hub listens for them. It reports false when the hub does not listen
// yet (its interest arrives just after the link): call it again.
func (l *Leaf) resendLostResets(log *slog.Logger) bool {
	acc := l.Server.GlobalAccount()
	want := map[string]string{} // "<stream>.<durable>" -> reset subject
	for _, st := range streams.Mirrored() {
		durable := streams.MirrorConsumerConfig(l.cfg.Site, st).Durable
		subj := "$JS." + streams.HubDomain + ".API.CONSUMER.RESET." + st.Stream() + "." + durable
		if !acc.SubscriptionInterest(subj) {
			return false
		}
		want[st.Stream()+"."+durable] = subj
	}
	sz, err := l.Server.Subsz(&server.SubszOptions{Subscriptions: true, Account: acc.Name, Limit: 1 << 16})
	if err != nil {
		log.Debug("listing the leaf's subscriptions", "err", err)
		return true
	}
	// A mirror awaits at most one answer. Only the leaf's own user may
	// subscribe to such subjects (agents hold their inboxes only), but
	// should there be more than one, the leaf sends none rather than
	// reset the hub's consumer many times over.
	awaited := map[string][]string{}
	for _, sd := range sz.Subs {
		if k := awaitedReset(sd.Subject); want[k] != "" {
			awaited[k] = append(awaited[k], sd.Subject)
		}
	}
	for k, replies := range awaited {
		subj := want[k]
		if len(replies) != 1 {
			log.Warn("not resending a mirror's reset: more than one reply awaits it", "subject", subj, "replies", len(replies))
			continue
		}
		if err := l.nc.PublishMsg(&nats.Msg{Subject: subj, Reply: replies[0]}); err != nil {
			log.Debug("resending a mirror's reset", "subject", subj, "err", err)
			continue
		}
		log.Debug("resent a mirror's reset lost while the uplink was down", "subject", subj)
	}
	return true
}

// awaitedReset is "<stream>.<durable>" of a JetStream reply subscription in
// the hub's domain, $JSC.R.hub.<account hash>.<stream>.<durable>.<token>
// (the format nats-server uses with JsAPIReplyFormatV2), "" for anything
// else.
func awaitedReset(reply string) string {
	rest, ok := strings.CutPrefix(reply, "$JSC.R."+streams.HubDomain+".")
	if !ok || strings.ContainsAny(rest, "*>") {
		return "" // a wildcard subscription is nobody's reply
	}
	tok := strings.Split(rest, ".")
	if len(tok) != 4 {
		return ""
	}
	return tok[1] + "." + tok[2]
}
