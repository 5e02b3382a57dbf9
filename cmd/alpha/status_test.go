package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

const statusDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: posture}
spec:
  files:
    - path: /etc/ssh/sshd_config
      content: "PermitRootLogin yes\n"
  compliance:
    policies:
      - name: no-root-ssh
        type: fileContent
        mode: audit
        path: /etc/ssh/sshd_config
        line: PermitRootLogin no
  maintenance:
    timeZone: UTC
    windows:
      - days: [sun]
        start: "02:00"
        end: "04:00"
`

// TestStatusShowsPosture checks what alpha status tells an operator at the
// hub: compliance score, maintenance windows, an operator hold placed with
// alpha hold at the site, and the drift repaired on the node.
func TestStatusShowsPosture(t *testing.T) {
	h := stack.Hub(t)
	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	root := t.TempDir()
	stack.Agent(t, "s1", "n1", l.ClientURL(), root, t.TempDir())
	hubBP := stack.KV(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	_, err := hubBP.PutString(context.Background(), "s1.n1", statusDoc)
	check.NoError(t, err)
	file := filepath.Join(root, "etc/ssh/sshd_config")
	stack.WaitFile(t, 10*time.Second, file, "PermitRootLogin yes\n")

	// Drift by hand, repaired and recorded as an event that reaches the hub.
	check.NoError(t, os.WriteFile(file, []byte("tampered\n"), 0o644))
	stack.WaitFile(t, 5*time.Second, file, "PermitRootLogin yes\n")

	// A hold placed at the site.
	check.NoError(t, runHold(context.Background(), []string{"--nats", l.ClientURL(), "--site", "s1", "--node", "n1", "--for", "2h", "--reason", "debugging the meter"}))

	nc, err := nats.Connect(h.ClientURL())
	check.NoError(t, err)
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, "hub")
	var out bytes.Buffer
	check.For(t, 15*time.Second, 100*time.Millisecond, func() error {
		rep, err := collect(context.Background(), js, statusFilter{})
		if err != nil {
			return err
		}
		out.Reset()
		rep.print(&out, true, time.Now())
		s := out.String()
		for _, want := range []string{"posture", " 0% ", "until ", "hold: ", "debugging the meter", "maintenance windows: ", "drift ", "file:/etc/ssh/sshd_config"} {
			if !strings.Contains(s, want) {
				return fmt.Errorf("status lacks %q:\n%s", want, s)
			}
		}
		lines := strings.Split(s, "\n")
		if f := strings.Fields(lines[1]); len(f) < 9 || f[8] == "0" {
			return fmt.Errorf("no drift counted:\n%s", s)
		}
		return nil
	})
	t.Log("\n" + out.String())
}
