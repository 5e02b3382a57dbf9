package blueprint

import (
	"fmt"
)

// File is a file the agent writes, relative to its root.
type File struct {
	Path      string   `json:"path" doc:"Absolute path on the node; the agent's root is prefixed."`
	Content   string   `json:"content,omitempty" doc:"Content of the file."`
	Mode      string   `json:"mode,omitempty" doc:"Octal permission bits, e.g. \"0644\" (default 0644)."`
	Owner     string   `json:"owner,omitempty" doc:"User name or numeric uid."`
	Group     string   `json:"group,omitempty" doc:"Group name or numeric gid."`
	DependsOn []string `json:"dependsOn,omitempty" doc:"Resources applied before this one, e.g. container:web."`
}

func (c *checker) files(files []File, ids map[string]string) {
	for i, f := range files {
		p := fmt.Sprintf("spec.files[%d]", i)
		c.path(p+".path", f.Path)
		if _, err := ParseMode(f.Mode, 0o644); err != nil {
			c.add(p+".mode", "%v", err)
		}
		if f.Path != "" {
			c.unique(ids, ResourceID("file", f.Path), p+".path")
		}
	}
}
