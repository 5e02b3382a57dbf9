package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/accounts"
	"github.com/alpha-edge/alpha/agent"
	"github.com/alpha-edge/alpha/blueprint/sign"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// A production agent checks cloud outputs against the bundle's
// hub-outputs.pub: the hub's signature passes, another key's does not; a
// bundle without the file leaves VerifyCloud unset (the agent then refuses
// every output), and a --hub-outputs-key that cannot be read is an error.
func TestAgentVerifiesCloudOutputs(t *testing.T) {
	dir := t.TempDir()
	op, err := accounts.Init(filepath.Join(dir, "operator"), "test", []string{"t1"})
	check.NoError(t, err)
	bundle := filepath.Join(dir, "bundle")
	_, err = op.AddSite("s1", "t1", []string{"n1"}, bundle)
	check.NoError(t, err)
	configure := func(s *secureFlags) (agent.Config, error) {
		c := agent.Config{Site: "s1", Node: "n1", NATSURL: "nats://127.0.0.1:4222", StateDir: t.TempDir()}
		return c, s.agent(&c, true)
	}

	c, err := configure(&secureFlags{bundle: bundle})
	check.NoError(t, err)
	if c.VerifyCloud == nil {
		t.Fatal("VerifyCloud not set from the bundle's " + accounts.HubOutputsKeyFile)
	}
	hubSeed, err := os.ReadFile(op.HubOutputsSeed())
	check.NoError(t, err)
	status := []byte(`{"phase":"applied","outputs":{"bucket_name":"b"}}`)
	good, err := sign.SignAs(sign.OutputsFormat, hubSeed, "s1.n1.logs", 1, status)
	check.NoError(t, err)
	got, err := c.VerifyCloud("s1.n1.logs", 1, good)
	check.NoError(t, err)
	check.Equal(t, string(got), string(status))
	other, err := os.ReadFile(op.PublisherSeed("t1"))
	check.NoError(t, err)
	bad, err := sign.SignAs(sign.OutputsFormat, other, "s1.n1.logs", 2, status)
	check.NoError(t, err)
	if _, err := c.VerifyCloud("s1.n1.logs", 2, bad); err == nil {
		t.Fatal("outputs signed with the tenant's publisher key accepted")
	}

	_, err = configure(&secureFlags{bundle: bundle, hubOutputsKey: filepath.Join(dir, "missing.pub")})
	if err == nil || !strings.Contains(err.Error(), "--hub-outputs-key") {
		t.Fatalf("unreadable --hub-outputs-key: %v", err)
	}
	check.NoError(t, os.Remove(filepath.Join(bundle, accounts.HubOutputsKeyFile)))
	c, err = configure(&secureFlags{bundle: bundle})
	check.NoError(t, err)
	if c.VerifyCloud != nil || c.Verify == nil {
		t.Fatal("without the hub key: want blueprints verified and VerifyCloud unset")
	}
}
