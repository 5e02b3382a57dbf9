package accounts

import "github.com/nats-io/jwt/v2"

// IssueUser issues a plain-client user of any account of the directory
// (tests reach a site account as a client with it).
func (o *Operator) IssueUser(account, name, path string, perms jwt.Permissions) (string, error) {
	return o.issueUser(account, name, perms, path)
}
