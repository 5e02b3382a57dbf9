// Package deploy holds what puts Alpha on a node: systemd units for the
// hub, a site leaf, an agent and a single-node site, and install.sh, which
// installs the binary, the units, the configuration and the credentials
// (idempotent; run it again to upgrade). Its tests run install.sh into a
// temporary root.
package deploy
