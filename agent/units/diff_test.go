package units

import (
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
)

func TestDiff(t *testing.T) {
	sha := strings.Repeat("a", 64)
	content := "[Service]\nExecStart=/bin/true\n"
	u := blueprint.Unit{Name: "m.service", Content: content,
		Executable: &blueprint.Executable{Path: "/usr/bin/m", Artifact: &blueprint.Artifact{Name: "m", SHA256: sha}}}
	running := observed{file: &content, exeSHA: sha, exeMode: 0o755, load: "loaded", active: "active", fileState: "enabled"}
	with := func(f func(*observed)) observed { o := running; f(&o); return o }
	other := "[Service]\nExecStart=/bin/false\n"
	mine := map[string]owned{"m.service": {Executable: "/usr/bin/m", Running: true}}
	for _, tc := range []struct {
		name string
		obs  observed
		own  map[string]owned
		want string // what the change does, "" for no change
	}{
		{"new", observed{load: "not-found", active: "inactive"}, nil, "create exe file enable start"},
		{"converged", running, mine, ""},
		{"binary changed", with(func(o *observed) { o.exeSHA = "b" }), mine, "update exe restart"},
		{"mode changed", with(func(o *observed) { o.exeMode = 0o700 }), mine, "update exe restart"},
		{"file changed", with(func(o *observed) { o.file = &other }), mine, "update file enable restart"},
		{"stopped by hand", with(func(o *observed) { o.active = "inactive" }), mine, "update start repair"},
		{"disabled by hand", with(func(o *observed) { o.fileState = "disabled" }), mine, "update enable repair"},
		{"failed by itself", with(func(o *observed) { o.active = "failed" }), mine, "update start repair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diff([]blueprint.Unit{u}, map[string]observed{u.Name: tc.obs}, tc.own)
			if tc.want == "" {
				if len(got) != 0 {
					t.Fatalf("want no change, got %+v", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("want one change, got %+v", got)
			}
			check := describe(got[0])
			if check != tc.want {
				t.Fatalf("got %q (%s), want %q", check, got[0].detail(), tc.want)
			}
		})
	}
	t.Run("left the blueprint", func(t *testing.T) {
		got := diff(nil, map[string]observed{"m.service": running}, mine)
		if len(got) != 1 || got[0].op != driver.Delete || got[0].exe != "/usr/bin/m" {
			t.Fatalf("got %+v", got)
		}
	})
}

func describe(c change) string {
	s := []string{string(c.op)}
	if c.writeExe {
		s = append(s, "exe")
	}
	if c.writeFile {
		s = append(s, "file")
	}
	if c.enable != nil && *c.enable {
		s = append(s, "enable")
	}
	if c.restart {
		s = append(s, "restart")
	}
	if c.start != nil && *c.start {
		s = append(s, "start")
	}
	if c.repair {
		s = append(s, "repair")
	}
	return strings.Join(s, " ")
}
