package accounts

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// RouteUser is the user name hub cluster members present to each other on
// their routes; the password is the operator directory's cluster secret.
const RouteUser = "alpha-route"

// clusterSecretBytes is the secret's entropy: as much as an nkey seed's.
const clusterSecretBytes = 32

// ClusterSecret is the path of the route password shared by every member
// of a hub cluster.
func (o *Operator) ClusterSecret() string { return filepath.Join(o.Dir, "creds", "cluster.secret") }

// writeClusterSecret makes a fresh random route password (0600).
func writeClusterSecret(o *Operator) error {
	b := make([]byte, clusterSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	return writeFile(o.ClusterSecret(), []byte(hex.EncodeToString(b)+"\n"), 0o600)
}

// ReadClusterSecret returns the route password. Members refuse routes from
// servers that do not present it, on top of verifying their certificates:
// the CA may also sign certificates of machines that are no members (a
// site's leaf listener).
func (o *Operator) ReadClusterSecret() (string, error) {
	raw, err := os.ReadFile(o.ClusterSecret())
	if os.IsNotExist(err) {
		return "", fmt.Errorf("accounts: cluster secret %s is missing (operator directories made before routes were authenticated have none): "+
			"make one with `openssl rand -hex %d > %s; chmod 600 %s` and copy it to every member", o.ClusterSecret(), clusterSecretBytes, o.ClusterSecret(), o.ClusterSecret())
	}
	if err != nil {
		return "", fmt.Errorf("accounts: cluster secret: %w", err)
	}
	s := strings.TrimSpace(string(raw))
	if len(s) < clusterSecretBytes {
		return "", fmt.Errorf("accounts: cluster secret %s holds %d characters, want at least %d", o.ClusterSecret(), len(s), clusterSecretBytes)
	}
	return s, nil
}
