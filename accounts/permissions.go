package accounts

import (
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/alpha-edge/alpha/streams"
)

// AgentInbox is the inbox prefix of a node's agent: its requests get replies
// and its watch gets deliveries there, and its permission to receive is
// limited to it (a shared _INBOX.> would let an agent receive what another
// node's agent asked for).
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
			// The site's mirror resumes its pre-created durable consumer.
			hubAPI+"CONSUMER.RESET."+stream+"."+cc.Durable,
			// Flow-control replies to that consumer (with the
			// AckFlowControl policy they are the acks too).
			"$JS.FC."+streams.HubDomain+".*."+stream+"."+cc.Durable+".*",
		)
		p.Sub.Allow.Add(
			// Replies to the mirror's RESET request.
			"$JSC.R." + streams.HubDomain + ".*." + stream + "." + cc.Durable + ".*",
		)
	}
	// The hub's mirror consumers push here; only this site's filter.
	p.Sub.Allow.Add(streams.MirrorDeliver(site) + ".>")
	siteAPI := "$JS." + site + ".API."
	for _, name := range streams.Uplinks() {
		cc := streams.UplinkConsumerConfig(site, name)
		p.Sub.Allow.Add(
			// The hub's sources resume the site's durable uplink
			// consumers, in the site's own domain.
			siteAPI+"CONSUMER.RESET."+name+"."+cc.Durable,
			// Flow-control replies (the acks) from the hub's sourcing stream.
			"$JS.FC."+site+".*."+name+"."+cc.Durable+".*",
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
	key := streams.Key(site, node)
	bp := "KV_" + streams.BlueprintsBucket
	var pub []string
	// The leaf maps its domain's API ($JS.<site>.API.>) onto $JS.API.>
	// before it checks permissions; both spellings are allowed so clients
	// with and without the domain work the same.
	for _, api := range []string{"$JS.API.", "$JS." + site + ".API."} {
		pub = append(pub,
			// Bucket lookups (js.KeyValue) read the stream's info: names,
			// counts, never values.
			api+"STREAM.INFO."+bp,
			api+"STREAM.INFO."+streams.StatusStream,
			// Watch: an ordered consumer whose filter is this node's key;
			// the filter is part of the subject, so no other filter passes.
			api+"CONSUMER.CREATE."+bp+".*.$KV."+streams.BlueprintsBucket+"."+key,
			// Level check: direct get of the last value of this key only.
			api+"DIRECT.GET."+bp+".$KV."+streams.BlueprintsBucket+"."+key,
			// Cloud outputs of this node (keys <site>.<node>.<config>):
			// bucket info, a watch filtered to them, direct gets.
			api+"STREAM.INFO.KV_"+streams.CloudBucket,
			api+"CONSUMER.CREATE.KV_"+streams.CloudBucket+".*.$KV."+streams.CloudBucket+"."+key+".*",
			api+"DIRECT.GET.KV_"+streams.CloudBucket+".$KV."+streams.CloudBucket+"."+key+".*",
			// Status: with a domain nats.go puts through the API prefix.
			api+"$KV."+streams.StatusBucket+"."+key,
		)
	}
	pub = append(pub,
		// Status: only this node's key.
		"$KV."+streams.StatusBucket+"."+key,
		// Flow control of the watch's consumer.
		"$JS.FC."+site+".*."+bp+".*.*",
		// The node's own telemetry and events (the site streams capture
		// them; the publish acks come back on the inbox).
		"telemetry."+key+".>",
		"events."+key+".>",
	)
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{
			// Replies and the watch's deliveries, on its own inbox.
			AgentInbox(site, node) + ".>",
		}},
	}
}
