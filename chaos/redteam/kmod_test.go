package redteam

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/kmod"
	"github.com/alpha-edge/alpha/agent/oscmd"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// Module names and options that modprobe would read as its own flags are
// refused at validation, each error naming the field and the value.
func TestKernelModuleFlagsRefusedAtValidation(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`{name: wireguard, options: "-C /tmp/evil.conf"}`, `spec.kernelModules[0].options: "-C /tmp/evil.conf"`},
		{`{name: wireguard, options: "debug=1 --config=/tmp/evil.conf"}`, `spec.kernelModules[0].options: "debug=1 --config=/tmp/evil.conf"`},
		{`{name: "--config", options: "/tmp/evil.conf"}`, `spec.kernelModules[0].name: "--config"`},
		{`{name: "-C"}`, `spec.kernelModules[0].name: "-C"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			doc := "apiVersion: alpha/v1\nkind: Blueprint\nmetadata: {name: k}\nspec:\n  kernelModules: [" + tc.yaml + "]\n"
			_, err := blueprint.Parse([]byte(doc))
			if !errors.Is(err, blueprint.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %s, got %v", tc.want, err)
			}
		})
	}
}

// Bypassing validation, the driver still hands modprobe the module as a
// module: the attacker's config file (whose install command would run as
// root) is never read. The victim is a file the install command creates.
func TestKernelModuleFlagsNeverReachModprobe(t *testing.T) {
	check.NeedCommand(t, "modprobe", "run .ci/setup-os.sh (apt-get install -y kmod)")
	for _, tc := range []struct {
		name  string
		mod   func(evil string) blueprint.KernelModule
		probe string
	}{
		{"options", func(evil string) blueprint.KernelModule {
			return blueprint.KernelModule{Name: "alpha_rt_probe", Options: "-C " + evil}
		}, "alpha_rt_probe"},
		{"name", func(evil string) blueprint.KernelModule {
			return blueprint.KernelModule{Name: "--config", Options: evil + " alpha_rt_probe"}
		}, "alpha_rt_probe"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			evil, ran := filepath.Join(dir, "evil.conf"), filepath.Join(dir, "ran")
			check.NoError(t, os.WriteFile(evil, []byte(fmt.Sprintf("install %s touch %s\n", tc.probe, ran)), 0o644))
			bp := blueprint.Empty()
			bp.Metadata.Name = "k"
			bp.Spec.KernelModules = []blueprint.KernelModule{tc.mod(evil)}
			// A fake root: no /sys/module, so the driver wants to load it.
			osApply(t, kmod.New(driver.Env{Root: t.TempDir()}, oscmd.Runner{}), bp)
			if _, err := os.Stat(ran); err == nil {
				t.Fatalf("modprobe ran the install command of %s: the module's fields reached it as flags", evil)
			}
		})
	}
}

// osRecorder is a runner that runs nothing: a shell script prefixed to every
// command line writes the argv to a file, one line per command, arguments
// separated by a unit separator.
func osRecorder(t *testing.T) (oscmd.Runner, func() [][]string) {
	t.Helper()
	dir := t.TempDir()
	log, script := filepath.Join(dir, "argv"), filepath.Join(dir, "record")
	check.NoError(t, os.WriteFile(script, []byte("#!/bin/sh\nprintf '%s\\037' \"$@\" >> '"+log+"'\necho >> '"+log+"'\n"), 0o755))
	return oscmd.Runner{Prefix: []string{script}}, func() [][]string {
		b, _ := os.ReadFile(log)
		var out [][]string
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			if l != "" {
				out = append(out, strings.Split(strings.TrimSuffix(l, "\x1f"), "\x1f"))
			}
		}
		return out
	}
}

// The argv the driver runs puts "--" before the module, for loading and
// unloading alike, so whatever the fields hold is a module and its
// parameters, never a modprobe flag.
func TestKmodArgvEndsFlagsBeforeModule(t *testing.T) {
	run, argv := osRecorder(t)
	root := t.TempDir()
	// "--config" is loaded (sysfs spells it with _), so blacklisting unloads it.
	check.NoError(t, os.MkdirAll(filepath.Join(root, "sys/module/__config"), 0o755))
	bp := blueprint.Empty()
	bp.Metadata.Name = "k"
	bp.Spec.KernelModules = []blueprint.KernelModule{
		{Name: "wireguard", Options: "-C /tmp/evil.conf"},
		{Name: "--config", State: "blacklisted"},
	}
	osApply(t, kmod.New(driver.Env{Root: root}, run), bp)
	got := fmt.Sprint(argv())
	check.Equal(t, got, fmt.Sprint([][]string{
		{"modprobe", "--", "wireguard", "-C", "/tmp/evil.conf"},
		{"modprobe", "-r", "--", "--config"},
	}))
}
