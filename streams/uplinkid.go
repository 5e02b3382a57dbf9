package streams

import (
	"fmt"
	"strconv"
	"time"
)

// UplinkIDs gives the ids a site stream's messages go to the hub under,
// by the live link (the leaf's forwarder) and by uplink bundle (the
// export) alike: a message that reaches the hub both ways then has one id
// there (HubMsgID scopes it by the site the hub knows), and the hub
// stream's duplicate window drops the second copy. A message with a
// Nats-Msg-Id of its own keeps it; one without gets site, stream, the
// stream's creation time and its sequence. Status values get none: the
// newest value of a key wins at the hub anyway.
type UplinkIDs struct {
	prefix string // empty: no made-up ids
}

// NewUplinkIDs gives the ids of site's stream, created at created (the
// stream's creation time, so a stream made again after its store was lost
// does not reuse the ids of the one before).
func NewUplinkIDs(site, stream string, created time.Time) UplinkIDs {
	if stream == StatusStream {
		return UplinkIDs{}
	}
	return UplinkIDs{prefix: fmt.Sprintf("%s:%s:%d:", site, stream, created.UnixNano())}
}

// ID is the id of the message at site sequence seq whose own Nats-Msg-Id
// is own ("" if none): own if it has one, else one made up for it, or ""
// for a status value.
func (u UplinkIDs) ID(own string, seq uint64) string {
	if own != "" || u.prefix == "" {
		return own
	}
	return u.prefix + strconv.FormatUint(seq, 10)
}
