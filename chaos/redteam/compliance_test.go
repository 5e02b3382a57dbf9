package redteam

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/compliance"
	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/files"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// osOutside is the victim: a file outside the agent's root whose content
// nothing in a blueprint may change or read back to the hub.
const osOutside = "PermitRootLogin yes\n# outside the root: keep out\n"

// osPlant makes root/etc/ssh/sshd_config lead to a file outside root, the
// way something that can write inside --root (a workload with a bind mount
// of it) would: by a symlinked directory or a symlinked file. It returns the
// victim's path.
func osPlant(t *testing.T, root, how string) string {
	t.Helper()
	outside := t.TempDir()
	victim := filepath.Join(outside, "sshd_config")
	check.NoError(t, os.WriteFile(victim, []byte(osOutside), 0o644))
	switch how {
	case "directory":
		check.NoError(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
		check.NoError(t, os.Symlink(outside, filepath.Join(root, "etc/ssh")))
	case "file":
		check.NoError(t, os.MkdirAll(filepath.Join(root, "etc/ssh"), 0o755))
		check.NoError(t, os.Symlink(victim, filepath.Join(root, "etc/ssh/sshd_config")))
	}
	return victim
}

// An enforced fileContent policy on a path that a planted symlink leads out
// of --root must neither write the outside file nor report its content; the
// policy's status says why it is not enforced.
func TestComplianceEnforceStaysInsideRoot(t *testing.T) {
	for _, how := range []string{"directory", "file"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			victim := osPlant(t, root, how)
			bp := blueprint.Empty()
			bp.Metadata.Name = "cis"
			bp.Spec.Compliance = &blueprint.Compliance{Policies: []blueprint.Policy{{
				Name: "no-root-login", Type: "fileContent", Mode: "enforce",
				Path: "/etc/ssh/sshd_config", Line: "PermitRootLogin no",
			}}}
			check.NoError(t, bp.Validate())
			d := compliance.New(driver.Env{Root: root})
			osApply(t, d, bp)

			got, err := os.ReadFile(victim)
			check.NoError(t, err)
			if string(got) != osOutside {
				t.Errorf("file outside the root was written:\n%s", got)
			}
			rs := d.Report(context.Background())
			check.Equal(t, len(rs), 1)
			msg := rs[0].Message
			if rs[0].State != "fail" || !strings.Contains(msg, "outside the root") {
				t.Errorf("status should fail, saying the path leads outside the root; got %s: %q", rs[0].State, msg)
			}
			if strings.Contains(msg, "PermitRootLogin yes") {
				t.Errorf("status carries content read outside the root: %q", msg)
			}
		})
	}
}

// Refused today, kept refused: the files driver does not write through a
// symlinked directory that leaves the root, nor through a symlinked file.
func TestFilesStayInsideRoot(t *testing.T) {
	for _, how := range []string{"directory", "file"} {
		t.Run(how, func(t *testing.T) {
			root := t.TempDir()
			victim := osPlant(t, root, how)
			d, err := files.New(driver.Env{Root: root, StateDir: t.TempDir()})
			check.NoError(t, err)
			bp := blueprint.Empty()
			bp.Metadata.Name = "f"
			bp.Spec.Files = []blueprint.File{{Path: "/etc/ssh/sshd_config", Content: "PermitRootLogin no\n"}}
			osApply(t, d, bp)
			got, err := os.ReadFile(victim)
			check.NoError(t, err)
			if string(got) != osOutside {
				t.Errorf("file outside the root was written:\n%s", got)
			}
		})
	}
}
