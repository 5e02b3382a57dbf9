package blueprint

import (
	"fmt"
)

// CloudConfig is a Terraform configuration the hub provisions for this node.
type CloudConfig struct {
	Name      string            `json:"name"`
	Main      string            `json:"main,omitempty" doc:"Inline HCL."`
	Module    *Artifact         `json:"module,omitempty" doc:"A module archive in the artifacts bucket."`
	Variables map[string]string `json:"variables,omitempty"`
	Outputs   []string          `json:"outputs,omitempty" doc:"Outputs the node needs."`
	Drift     string            `json:"drift,omitempty" doc:"repair or report (default report)."`
}

func (c *checker) cloud(cs []CloudConfig, ids map[string]string) {
	for i, cc := range cs {
		p := fmt.Sprintf("spec.cloud[%d]", i)
		c.name(p+".name", cc.Name)
		if (cc.Main == "") == (cc.Module == nil) {
			c.add(p, "needs exactly one of main or module")
		}
		c.artifact(p+".module", cc.Module)
		c.oneOf(p+".drift", cc.Drift, "repair", "report")
		if cc.Name != "" {
			c.unique(ids, ResourceID("cloud", cc.Name), p+".name")
		}
	}
}
