package kmod

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func bp(ms ...blueprint.KernelModule) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "k"
	b.Spec.KernelModules = ms
	return b
}

// The test kernel may have no loadable modules at all (this project's CI VM
// has a monolithic kernel without /lib/modules), and loading one would touch
// the host kernel anyway: the root is faked, and only persistence and
// planning are checked for real. modprobe itself runs only to prove its
// failure is reported clearly.
func TestPersistAndPlan(t *testing.T) {
	root := t.TempDir()
	check.NoError(t, os.MkdirAll(filepath.Join(root, "sys/module/br_netfilter"), 0o755))
	check.NoError(t, os.MkdirAll(filepath.Join(root, "sys/module/usb_storage"), 0o755))
	d := New(driver.Env{Root: root}, oscmd.Runner{})
	ms := []blueprint.KernelModule{
		{Name: "br_netfilter"},
		{Name: "wireguard", Options: "debug=1"},
		{Name: "usb-storage", State: "blacklisted"},
		{Name: "firewire-core", State: "blacklisted"},
	}
	p, err := d.Plan(context.Background(), bp(ms...))
	check.NoError(t, err)
	var got []string
	for _, c := range p {
		got = append(got, string(c.Op)+" "+c.ID)
	}
	check.Equal(t, strings.Join(got, ", "),
		"create kmod:wireguard, delete kmod:usb-storage, update file:/etc/modules-load.d/alpha.conf, update file:/etc/modprobe.d/alpha.conf")
	for _, c := range p[2:] {
		check.NoError(t, c.Apply(context.Background()))
	}
	load, _ := os.ReadFile(filepath.Join(root, LoadFile))
	mp, _ := os.ReadFile(filepath.Join(root, ModprobeFile))
	if !strings.HasSuffix(string(load), "\nbr_netfilter\nwireguard\n") {
		t.Errorf("modules-load.d:\n%s", load)
	}
	for _, want := range []string{"options wireguard debug=1\n", "blacklist usb-storage\ninstall usb-storage /bin/false\n", "blacklist firewire-core\n"} {
		if !strings.Contains(string(mp), want) {
			t.Errorf("modprobe.d lacks %q:\n%s", want, mp)
		}
	}
	// Files now match: only the runtime changes remain.
	p, err = d.Plan(context.Background(), bp(ms...))
	check.NoError(t, err)
	check.Equal(t, len(p), 2)
	// Nothing left: files removed.
	p, err = d.Plan(context.Background(), bp())
	check.NoError(t, err)
	for _, c := range p {
		check.NoError(t, c.Apply(context.Background()))
	}
	if _, err := os.Stat(filepath.Join(root, LoadFile)); !os.IsNotExist(err) {
		t.Fatalf("modules-load.d file should be gone: %v", err)
	}
}

func TestModprobeFailureIsClear(t *testing.T) {
	check.NeedCommand(t, "modprobe", "run .ci/setup-os.sh (apt-get install -y kmod)")
	d := New(driver.Env{Root: t.TempDir()}, oscmd.Runner{})
	p, err := d.Plan(context.Background(), bp(blueprint.KernelModule{Name: "alpha_no_such_module"}))
	check.NoError(t, err)
	err = p[0].Apply(context.Background())
	if err == nil || !strings.Contains(err.Error(), "kmod: loading alpha_no_such_module") {
		t.Fatalf("want a clear load error, got %v", err)
	}
}
