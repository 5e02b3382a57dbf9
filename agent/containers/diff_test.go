package containers

import (
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/blueprint"
)

func TestDiff(t *testing.T) {
	web := blueprint.Container{Name: "web", Image: "i:1"}
	job := blueprint.Container{Name: "job", Image: "i:1", Restart: "on-failure"}
	once := blueprint.Container{Name: "once", Image: "i:1", Restart: "no"}
	h := SpecHash
	for _, tc := range []struct {
		name    string
		want    []blueprint.Container
		obs     map[string]observed
		created map[string]string
		exp     []change
	}{
		{"nothing yet", []blueprint.Container{web}, nil, nil,
			[]change{{"web", actCreate, driver.Create, "missing", false, ""}}},
		{"converged", []blueprint.Container{web}, map[string]observed{"web": {hash: h(web), state: "running"}}, nil, nil},
		{"removed by hand is a repair", []blueprint.Container{web}, nil, map[string]string{"web": h(web)},
			[]change{{"web", actCreate, driver.Create, "missing", true, ""}}},
		{"spec changed", []blueprint.Container{web}, map[string]observed{"web": {id: "f00", hash: "old", state: "running"}}, nil,
			[]change{{"web", actReplace, driver.Update, "spec changed", false, "f00"}}},
		{"stopped by hand", []blueprint.Container{web}, map[string]observed{"web": {id: "f00", hash: h(web), state: "exited", exitCode: 137}}, nil,
			[]change{{"web", actStart, driver.Update, "exited (exit code 137)", true, "f00"}}},
		{"on-failure after success stays down", []blueprint.Container{job}, map[string]observed{"job": {hash: h(job), state: "exited"}}, nil, nil},
		{"on-failure after failure", []blueprint.Container{job}, map[string]observed{"job": {hash: h(job), state: "exited", exitCode: 1}}, nil,
			[]change{{"job", actStart, driver.Update, "exited (exit code 1)", true, ""}}},
		{"restart no stays down", []blueprint.Container{once}, map[string]observed{"once": {hash: h(once), state: "exited", exitCode: 1}}, nil, nil},
		{"left the blueprint", nil, map[string]observed{"old": {id: "0ld", state: "running"}}, nil,
			[]change{{"old", actRemove, driver.Delete, "left the blueprint", false, "0ld"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := diff(tc.want, tc.obs, tc.created)
			if len(got) != len(tc.exp) {
				t.Fatalf("got %+v, want %+v", got, tc.exp)
			}
			for i := range got {
				if got[i] != tc.exp[i] {
					t.Fatalf("got %+v, want %+v", got[i], tc.exp[i])
				}
			}
		})
	}
}
