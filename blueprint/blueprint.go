// Package blueprint defines the Alpha blueprint: the one document that declares
// everything a node runs, and its strict decoding and validation.
package blueprint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
)

// APIVersion is the only apiVersion this package accepts.
const APIVersion = "alpha/v1"

// Kind is the only kind this package accepts.
const Kind = "Blueprint"

// MaxSize is the largest blueprint document accepted, in bytes. It stays below
// NATS's default max_payload (1 MiB) so a blueprint always fits in one message
// with room for the signature envelope.
const MaxSize = 512 << 10

// Blueprint is one node's desired state.
type Blueprint struct {
	APIVersion string   `json:"apiVersion" doc:"Always alpha/v1."`
	Kind       string   `json:"kind" doc:"Always Blueprint."`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names a blueprint.
type Metadata struct {
	Name        string            `json:"name" doc:"Name of the blueprint, for people."`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Urgent changes are applied even outside maintenance windows.
	Urgent bool `json:"urgent,omitempty" doc:"Apply this revision even outside maintenance windows."`
}

// Spec holds one typed section per kind of thing the agent manages. Each
// section lives in its own file of this package.
type Spec struct {
	Files         []File            `json:"files,omitempty" doc:"Files the agent writes under its root."`
	Containers    []Container       `json:"containers,omitempty" doc:"Containers run through podman."`
	Units         []Unit            `json:"units,omitempty" doc:"systemd units and the native executables they run."`
	Sysctl        map[string]string `json:"sysctl,omitempty" doc:"Kernel parameters, applied and persisted under sysctl.d."`
	KernelModules []KernelModule    `json:"kernelModules,omitempty"`
	Firewall      *Firewall         `json:"firewall,omitempty" doc:"nftables rule set in a table the agent owns."`
	Network       *Network          `json:"network,omitempty"`
	Compliance    *Compliance       `json:"compliance,omitempty"`
	Cloud         []CloudConfig     `json:"cloud,omitempty" doc:"Terraform configurations provisioned by the hub."`
	Telemetry     *Telemetry        `json:"telemetry,omitempty"`
	Health        *Health           `json:"health,omitempty"`
	Remediation   []Remediation     `json:"remediation,omitempty"`
	Maintenance   *Maintenance      `json:"maintenance,omitempty"`
	Rollback      *Rollback         `json:"rollback,omitempty" doc:"Return to the last-known-good revision when this one fails to apply or stays unhealthy."`
}

// Empty is the blueprint of a node that should run nothing: what the agent
// converges to when its key is deleted.
func Empty() *Blueprint {
	return &Blueprint{APIVersion: APIVersion, Kind: Kind}
}

// Hash is a stable digest of the blueprint's meaning (not its formatting).
func (b *Blueprint) Hash() string {
	data, _ := json.Marshal(b)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
