package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

// TestEndToEndWithNATSCLI drives the whole path with the real nats CLI, as a
// user would: put, change, delete, and read status at the hub.
func TestEndToEndWithNATSCLI(t *testing.T) {
	h := stack.Hub(t)
	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	root := t.TempDir()
	stack.Agent(t, "s1", "n1", l.ClientURL(), root, t.TempDir())
	file := filepath.Join(root, "etc/app/hello.conf")
	hubStatus := stack.KV(t, h.ClientURL(), "hub", streams.StatusBucket)

	put := func(doc string) uint64 {
		t.Helper()
		out, err := stack.NATS(t, h.ClientURL(), "kv", "put", "blueprints", "s1.n1", doc)
		check.NoError(t, err)
		// The CLI prints nothing about the revision; ask it.
		out, err = stack.NATS(t, h.ClientURL(), "kv", "get", "blueprints", "s1.n1")
		check.NoError(t, err)
		var rev uint64
		for _, line := range strings.Split(out, "\n") {
			if i := strings.Index(line, "revision: "); i >= 0 {
				fmt.Sscanf(line[i+len("revision: "):], "%d", &rev)
			}
		}
		if rev == 0 {
			t.Fatalf("no revision in nats kv get output:\n%s", out)
		}
		return rev
	}
	waitApplied := func(rev uint64, phase string) {
		t.Helper()
		check.For(t, 10*time.Second, 20*time.Millisecond, func() error {
			ns, err := stack.NodeStatus(hubStatus, "s1", "n1")
			if err != nil {
				return err
			}
			if ns.AppliedRevision != rev || ns.Phase != phase {
				return fmt.Errorf("hub sees applied %d phase %s (%s), want %d %s", ns.AppliedRevision, ns.Phase, ns.Message, rev, phase)
			}
			return nil
		})
	}

	r1 := put(stack.Doc("hello", "/etc/app/hello.conf", "greeting=hi\n"))
	stack.WaitFile(t, 5*time.Second, file, "greeting=hi\n")
	waitApplied(r1, "Converged")

	r2 := put(stack.Doc("hello", "/etc/app/hello.conf", "greeting=hello\n"))
	stack.WaitFile(t, 5*time.Second, file, "greeting=hello\n")
	waitApplied(r2, "Converged")

	// The status the CLI shows at the hub is the agent's JSON document.
	out, err := stack.NATS(t, h.ClientURL(), "kv", "get", "status", "s1.n1", "--raw")
	check.NoError(t, err)
	if !strings.Contains(out, fmt.Sprintf(`"appliedRevision":%d`, r2)) {
		t.Fatalf("nats kv get status shows %s", out)
	}

	_, err = stack.NATS(t, h.ClientURL(), "kv", "del", "-f", "blueprints", "s1.n1")
	check.NoError(t, err)
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, err := os.Stat(filepath.Join(root, "etc")); !os.IsNotExist(err) {
			return fmt.Errorf("etc still there: %v", err)
		}
		return nil
	})
	check.For(t, 5*time.Second, 20*time.Millisecond, func() error {
		ns, err := stack.NodeStatus(hubStatus, "s1", "n1")
		if err != nil || ns.Phase != "Removed" {
			return fmt.Errorf("phase %s err %v", ns.Phase, err)
		}
		return nil
	})
}

// TestBadInputKeepsLastGood publishes broken blueprints; each must be refused
// with an error naming the field, while the last good one stays applied.
func TestBadInputKeepsLastGood(t *testing.T) {
	h := stack.Hub(t)
	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	root := t.TempDir()
	stack.Agent(t, "s1", "n1", l.ClientURL(), root, t.TempDir())
	file := filepath.Join(root, "etc/good.conf")
	hubBP := stack.KV(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	siteStatus := stack.KV(t, l.ClientURL(), "s1", streams.StatusBucket)

	good := stack.Doc("good", "/etc/good.conf", "v=1\n")
	goodRev, err := hubBP.PutString(t.Context(), "s1.n1", good)
	check.NoError(t, err)
	stack.WaitFile(t, 5*time.Second, file, "v=1\n")

	huge := good + "# " + strings.Repeat("x", 600<<10) + "\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"malformed YAML", "apiVersion: alpha/v1\nspec: [\n", "malformed YAML"},
		{"unknown field", strings.Replace(good, "content:", "contnet:", 1), `spec.files[0].contnet: unknown field "contnet" (line 8)`},
		{"wrong type", strings.Replace(good, "  files:\n", "  files: yes\n  x:\n", 1), `spec.files: expected a list, got "yes"`},
		{"path escaping the root", strings.Replace(good, "/etc/good.conf", "/etc/../../../tmp/evil", 1), `spec.files[0].path: "/etc/../../../tmp/evil" must be an absolute, clean path`},
		{"huge document", huge, "bytes; the limit is 524288"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rev, err := hubBP.PutString(t.Context(), "s1.n1", tc.doc)
			check.NoError(t, err)
			check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
				ns, err := stack.NodeStatus(siteStatus, "s1", "n1")
				if err != nil {
					return err
				}
				if ns.DesiredRevision != rev || ns.Phase != "Invalid" {
					return fmt.Errorf("desired %d phase %s, want %d Invalid", ns.DesiredRevision, ns.Phase, rev)
				}
				if ns.AppliedRevision != goodRev {
					return fmt.Errorf("applied %d, want the last good %d", ns.AppliedRevision, goodRev)
				}
				if len(ns.Invalid) == 0 || !strings.Contains(strings.Join(ns.Invalid, "\n"), tc.want) {
					return fmt.Errorf("status says %q, want %q", ns.Invalid, tc.want)
				}
				return nil
			})
			check.NoError(t, stack.FileIs(file, "v=1\n"))
		})
	}
	if _, err := os.Stat("/tmp/evil"); err == nil {
		t.Fatal("a file escaped the root")
	}
}
