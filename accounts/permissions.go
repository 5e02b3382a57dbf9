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
func AgentInbox(site, node string) string { return streams.Inbox(site, node) }

// LeafPermissions are those of a site leaf's user at the hub. For a leaf
// connection they read from the leaf's side: Pub is what the leaf may send
// to the hub, Sub what the hub may send to the leaf. See PERMISSIONS.md for
// the reason of each subject; with ScopedSubjects on, every one names the
// site, its domain or its own consumers.
func LeafPermissions(site string) jwt.Permissions {
	var p jwt.Permissions
	hubAPI := streams.APIPrefix(streams.HubDomain) + "."
	for _, st := range streams.Mirrored() {
		cc := streams.MirrorConsumerConfig(site, st)
		stream := st.Stream()
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
	// The uplink: requests to the hub's ingest under the site's own name
	// (the ingest trusts the name in the subject), which the hub may
	// announce to the leaf, and the ingest's answers on the forwarder's
	// inbox prefix.
	ingest := streams.IngestSubject(site)
	p.Pub.Allow.Add(ingest)
	p.Sub.Allow.Add(ingest, streams.IngestReplyPrefix(site)+".>")
	return p
}

// AgentPermissions are those of a node's agent at its site leaf, derived
// from streams.AgentOps.
func AgentPermissions(site, node string) *server.Permissions {
	return SitePermissions(site, streams.Inbox(site, node), streams.AgentOps(site, node))
}

// SiteOperatorPermissions are those of the site operator credential: holds
// and status of the site, from streams.SiteOperatorOps.
func SiteOperatorPermissions(site string) *server.Permissions {
	return SitePermissions(site, streams.Inbox(site, streams.SiteOperator), streams.SiteOperatorOps(site))
}

// SitePermissions grant a client of a site leaf exactly ops, receiving only
// on its inbox. The leaf maps its domain's API ($JS.<site>.API.>) onto
// $JS.API.> before it checks permissions; both spellings are granted so
// clients with and without the domain work the same.
func SitePermissions(site, inbox string, ops []streams.Op) *server.Permissions {
	var pub, deny []string
	apis := []string{"$JS.API.", streams.APIPrefix(site) + "."}
	// A client may delete the ephemeral consumers its watches and reads
	// made (without the grant every stopped watch is a refused request);
	// their names are random and no client may list consumers, so it
	// cannot name another client's. The uplinks' durables it may never
	// delete, nor pull from: a message it took would not reach the hub.
	for _, s := range streams.Uplinks() {
		for _, api := range apis {
			deny = append(deny, api+"CONSUMER.DELETE."+s+"."+streams.UplinkConsumer(s),
				api+"CONSUMER.MSG.NEXT."+s+"."+streams.UplinkConsumer(s))
		}
	}
	read := func(stream, filter string) {
		for _, api := range apis {
			pub = append(pub,
				// Opening a bucket reads its stream info: config and
				// counts, never values.
				api+"STREAM.INFO."+stream,
				// Watches and lists: consumers whose filter is part of
				// the subject, so no other filter passes.
				api+"CONSUMER.CREATE."+stream+".*."+filter,
				// Gets of the last value of matching keys only.
				api+"DIRECT.GET."+stream+"."+filter,
				api+"CONSUMER.DELETE."+stream+".*",
			)
		}
		// Flow control of those consumers.
		pub = append(pub, "$JS.FC."+site+".*."+stream+".*.*")
	}
	for _, op := range ops {
		switch op.Kind {
		case streams.KVRead:
			read("KV_"+op.Name, "$KV."+op.Name+"."+op.Filter)
		case streams.KVWrite:
			read("KV_"+op.Name, "$KV."+op.Name+"."+op.Filter)
			pub = append(pub, "$KV."+op.Name+"."+op.Filter)
			for _, api := range apis {
				// With a domain, nats.go puts through the API prefix.
				pub = append(pub, api+"$KV."+op.Name+"."+op.Filter)
			}
		case streams.ObjectRead:
			stream := "OBJ_" + op.Name
			// Chunks are read by a consumer filtered to the object's
			// chunk subject; the metadata by a get of its meta subject.
			read(stream, "$O."+op.Name+".C.*")
			for _, api := range apis {
				pub = append(pub, api+"DIRECT.GET."+stream+".$O."+op.Name+".M.*")
			}
		case streams.StreamRead:
			read(op.Name, op.Filter)
			for _, api := range apis {
				// Ordered consumers pull. The uplink's durable is
				// denied above.
				pub = append(pub, api+"CONSUMER.MSG.NEXT."+op.Name+".*")
			}
		case streams.Publish, streams.Request:
			pub = append(pub, op.Filter)
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedupe(pub), Deny: deny},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox + ".>"}},
	}
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0]
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}
