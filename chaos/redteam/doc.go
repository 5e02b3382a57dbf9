// Package redteam attacks Alpha the way a hostile tenant admin, a stolen site
// box and a rogue agent key would, and asserts on what reaches the victim.
//
// The three attacker roles: a hostile tenant admin holds one tenant's admin
// credentials and puts whatever blueprints, cloud configurations and keys
// that account allows at the hub, aiming at other tenants, at the hub itself
// and, through blueprint sections, at parts of a node the agent promises
// not to touch; a stolen site box holds one site's leaf credentials and its
// own local JetStream, free to write anything locally, aiming at other sites
// of its tenant and at the hub's store; a rogue agent key is one node's agent
// credentials, used to read and write as that node, aiming at other nodes,
// at its site and at what agents trust. Each test asserts on content at the
// victim (another site's status, another tenant's store, a file or table on
// a node), not merely on an error, and the attacks refused today are tested
// too, so they stay refused.
package redteam
