package redteam

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/firewall"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/netnstest"
)

// osFirewalld stands for another program's table: a rule the node relies on
// that Alpha promised never to touch.
const osFirewalld = `table inet firewalld {
	chain filter_INPUT {
		type filter hook input priority filter + 10; policy accept;
		tcp dport 9090 accept comment "firewalld:cockpit"
	}
}
`

// osApply plans bp and applies every change, as the engine would; a refused
// plan or change is only logged: the verdict is what the victim's table
// holds afterwards.
func osApply(t *testing.T, d driver.Driver, bp *blueprint.Blueprint) {
	t.Helper()
	ctx := context.Background()
	p, err := d.Plan(ctx, bp)
	if err != nil {
		t.Logf("plan refused: %v", err)
	}
	for _, c := range p {
		if err := c.Apply(ctx); err != nil {
			t.Logf("%s refused: %v", c.ID, err)
		}
	}
}

func osListTable(t *testing.T, run oscmd.Runner, table string) string {
	t.Helper()
	out, err := run.Run(context.Background(), nil, "nft", "list", "table", "inet", table)
	if err != nil {
		return "table inet " + table + " is gone: " + err.Error()
	}
	return string(out)
}

// A blueprint whose firewall names another program's table (here as a
// hostile tenant admin or a careless publisher would write it) must neither
// pass validation nor, handed to the driver directly, change or delete that
// table: not when applied, not when the section is removed again.
func TestFirewallLeavesOtherProgramsTables(t *testing.T) {
	_, run := netnstest.New(t)
	check.NeedCommand(t, "nft", "run .ci/setup-os.sh (apt-get install -y nftables)")
	_, err := run.Run(context.Background(), []byte(osFirewalld), "nft", "-f", "-")
	check.NoError(t, err)
	before := osListTable(t, run, "firewalld")
	if !strings.Contains(before, `"firewalld:cockpit"`) {
		t.Fatalf("victim table not set up:\n%s", before)
	}

	doc := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: fw}\nspec:\n" +
		"  firewall:\n    table: firewalld\n    policy: {input: drop}\n" +
		"    rules: [{name: ssh, action: accept, protocol: tcp, port: 22}]\n"
	_, err = blueprint.Parse([]byte(doc))
	const want = `spec.firewall.table: "firewalld" must start with "alpha"`
	if !errors.Is(err, blueprint.ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Errorf("validation: want an error saying %q, got %v", want, err)
	}

	// The driver boundary: the same spec reaching the agent without
	// validation (a decoder bug, an old hub) still leaves the table alone.
	bp := blueprint.Empty()
	bp.Metadata.Name = "fw"
	bp.Spec.Firewall = &blueprint.Firewall{Table: "firewalld", Policy: blueprint.FirewallPolicy{Input: "drop"},
		Rules: []blueprint.FirewallRule{{Name: "ssh", Action: "accept", Protocol: "tcp", Port: 22}}}
	d, err := firewall.New(driver.Env{StateDir: t.TempDir()}, run)
	check.NoError(t, err)
	osApply(t, d, bp)
	if got := osListTable(t, run, "firewalld"); got != before {
		t.Errorf("firewalld's table changed by the apply:\n%s\nwant:\n%s", got, before)
	}
	osApply(t, d, blueprint.Empty())
	if got := osListTable(t, run, "firewalld"); got != before {
		t.Errorf("firewalld's table changed when the section left the blueprint:\n%s\nwant:\n%s", got, before)
	}
}
