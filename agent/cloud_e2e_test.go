package agent_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/alpha-edge/alpha/hub/cloud"
	"github.com/alpha-edge/alpha/internal/testkit/check"
	"github.com/alpha-edge/alpha/internal/testkit/stack"
	"github.com/alpha-edge/alpha/streams"
)

const cloudDoc = `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: cloudy}
spec:
  cloud:
    - name: logs
      variables: {site: VALUE}
      outputs: [bucket_name]
      main: |
        variable "site" { type = string }
        resource "terraform_data" "bucket" { input = "alpha-logs-${var.site}" }
        output "bucket_name" { value = terraform_data.bucket.output }
  files:
    - path: /etc/gateway.env
      content: "LOG_BUCKET=${cloud.logs.bucket_name}\n"
`

// TestCloudOutputReachesNode runs the whole path: the hub provisions with
// real Terraform, the output flows to the site's mirror, the agent resolves
// it into the file it writes; a changed variable updates the file.
func TestCloudOutputReachesNode(t *testing.T) {
	check.NeedCommand(t, "terraform", "install terraform >= 1.5 (.ci/setup-terraform.sh)")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h := stack.Hub(t)
	nc, err := h.Connect()
	check.NoError(t, err)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	r, err := cloud.New(cloud.Config{JS: js, WorkDir: t.TempDir(), Log: stack.Log()})
	check.NoError(t, err)
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	l, _ := stack.Leaf(t, "s1", h.LeafURL(), t.TempDir())
	root := t.TempDir()
	stack.Agent(t, "s1", "n1", l.ClientURL(), root, t.TempDir())
	hubBP := stack.KV(t, h.ClientURL(), "hub", streams.BlueprintsBucket)
	put := func(site string) {
		_, err := hubBP.PutString(ctx, "s1.n1", strings.Replace(cloudDoc, "VALUE", site, 1))
		check.NoError(t, err)
	}
	put("plant-7")
	stack.WaitFile(t, 60*time.Second, filepath.Join(root, "etc/gateway.env"), "LOG_BUCKET=alpha-logs-plant-7\n")
	put("plant-8")
	stack.WaitFile(t, 60*time.Second, filepath.Join(root, "etc/gateway.env"), "LOG_BUCKET=alpha-logs-plant-8\n")
	check.Equal(t, r.Stats().Applies, uint64(2))
}
