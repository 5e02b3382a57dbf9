// Package redteam attacks Alpha the way a hostile tenant admin, a stolen site
// box and a rogue agent key would, and asserts on what reaches the victim.
//
// The three attacker roles: a hostile tenant admin holds one tenant's admin
// credentials and puts whatever blueprints, cloud configurations and keys
// that account allows at the hub, aiming at other tenants, the hub itself
// or a node's files; a stolen site box holds one site's leaf credentials and
// its own local JetStream, free to write anything locally, aiming at other
// sites of its tenant and at the hub's store; a rogue agent key is one
// node's agent credentials (or a blueprint that reaches that agent),
// aiming at the node beyond what the blueprint's sections promise to touch.
// Each test asserts on content at the victim (another site's status,
// another tenant's store, a file or table on the node), not merely on an
// error, and each stays so that an attack refused today stays refused.
package redteam
