package accounts

import (
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/alpha-edge/alpha/streams"
)

// LeafInbox is the inbox prefix of a site leaf's own connection: its
// requests to the hub get replies here, and the leaf's permission to
// receive is limited to it (a shared _INBOX.> would let a site receive
// replies meant for others).
func LeafInbox(site string) string { return "alpha.inbox." + site }

// AgentInbox is the inbox prefix of a node's agent, for the same reason.
func AgentInbox(site, node string) string { return "alpha.inbox." + site + "." + node }

// LeafPermissions are those of a site leaf's user at the hub. For a leaf
// connection they read from the leaf's side: Pub is what the leaf may send
// to the hub, Sub what the hub may send to the leaf. See PERMISSIONS.md for
// the reason of each subject; with ScopedSubjects on, every one names the
// site, its domain or its own consumers.
func LeafPermissions(site string) jwt.Permissions {
	var p jwt.Permissions
	hubAPI := "$JS." + streams.HubDomain + ".API."
	for _, b := range streams.Mirrored() {
		cc := streams.MirrorConsumerConfig(site, b)
		stream := "KV_" + b
		p.Pub.Allow.Add(
			// The leaf checks its mirror consumers exist (leaf.ensureHub).
			hubAPI+"CONSUMER.INFO."+stream+"."+cc.Durable,
			// The site's mirror resumes its pre-created durable consumer.
			hubAPI+"CONSUMER.RESET."+stream+"."+cc.Durable,
			// Flow-control and ack replies of that consumer.
			"$JS.FC."+streams.HubDomain+".*."+stream+"."+cc.Durable+".*",
			"$JS.ACK."+streams.HubDomain+".*."+stream+"."+cc.Durable+".>",
		)
		p.Sub.Allow.Add(
			// Replies to the mirror's RESET request.
			"$JSC.R."+streams.HubDomain+".*."+stream+"."+cc.Durable+".*",
		)
	}
	// The hub's mirror consumers push here; only this site's filter.
	p.Sub.Allow.Add(streams.MirrorDeliver(site) + ".>")
	// Replies to the leaf's own requests.
	p.Sub.Allow.Add(LeafInbox(site) + ".>")
	siteAPI := "$JS." + site + ".API."
	for _, name := range streams.Uplinks() {
		cc := streams.UplinkConsumerConfig(site, name)
		p.Sub.Allow.Add(
			// The hub's sources reset and inspect the site's durable uplink
			// consumers, in the site's own domain.
			siteAPI+"CONSUMER.RESET."+name+"."+cc.Durable,
			siteAPI+"CONSUMER.INFO."+name+"."+cc.Durable,
			// Flow-control and ack replies from the hub's sourcing stream.
			"$JS.FC."+site+".*."+name+"."+cc.Durable+".*",
			"$JS.ACK."+site+".*."+name+"."+cc.Durable+".>",
		)
		p.Pub.Allow.Add(
			// Replies to those requests.
			"$JSC.R."+site+".*."+name+"."+cc.Durable+".*",
			// The uplink consumer's messages and heartbeats.
			cc.DeliverSubject,
		)
	}
	return p
}

// AgentPermissions are those of a node's agent at its site leaf: read its
// own blueprint key, write its own status key, nothing else.
func AgentPermissions(site, node string) *server.Permissions {
	api := "$JS." + site + ".API."
	key := streams.Key(site, node)
	bp := "KV_" + streams.BlueprintsBucket
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: []string{
			// Bucket lookups (js.KeyValue) read the stream's info: names,
			// counts, never values.
			api + "STREAM.INFO." + bp,
			api + "STREAM.INFO." + streams.StatusStream,
			// Watch: an ordered consumer whose filter is this node's key;
			// the filter is part of the subject, so no other filter passes.
			api + "CONSUMER.CREATE." + bp + ".*.$KV." + streams.BlueprintsBucket + "." + key,
			// Level check: direct get of the last value of this key only.
			api + "DIRECT.GET." + bp + ".$KV." + streams.BlueprintsBucket + "." + key,
			// Flow control of the watch's consumer.
			"$JS.FC." + site + ".*." + bp + ".*.*",
			// Status: only this node's key (with a domain nats.go puts
			// through the API prefix).
			"$KV." + streams.StatusBucket + "." + key,
			api + "$KV." + streams.StatusBucket + "." + key,
		}},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Replies and the watch's deliveries, on its own inbox.
			AgentInbox(site, node) + ".>",
		}},
	}
}
