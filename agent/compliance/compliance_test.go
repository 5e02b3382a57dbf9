package compliance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alpha-edge/alpha/agent/driver"
	"github.com/alpha-edge/alpha/agent/engine"
	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/testkit/check"
)

func write(t *testing.T, root, p, content string) {
	t.Helper()
	full := filepath.Join(root, p)
	check.NoError(t, os.MkdirAll(filepath.Dir(full), 0o755))
	check.NoError(t, os.WriteFile(full, []byte(content), 0o644))
}

// fakeRoot builds a node that passes secure boot, AppArmor and LUKS for
// /data but not for /, runs SELinux permissive, and allows root logins.
func fakeRoot(t *testing.T) string {
	root := t.TempDir()
	write(t, root, SecureBootVar, "\x06\x00\x00\x00\x01")
	write(t, root, "/sys/fs/selinux/enforce", "0")
	write(t, root, "/sys/kernel/security/apparmor/profiles", "/usr/sbin/sshd (enforce)\nmeter (complain)\n")
	write(t, root, "/proc/mounts", "/dev/sda1 / ext4 rw 0 0\n/dev/mapper/data /data ext4 rw 0 0\n/dev/dm-1 /logs ext4 rw 0 0\n")
	write(t, root, "/etc/crypttab", "# name device\ndata UUID=1234 none luks\n")
	write(t, root, "/sys/block/dm-1/dm/uuid", "CRYPT-LUKS2-abcd-logs\n")
	write(t, root, "/etc/ssh/sshd_config", "# PermitRootLogin prohibit-password\nPort 22\nPermitRootLogin yes\npermitrootlogin without-password\nUsePAM yes\n")
	return root
}

func policies(mode string) *blueprint.Blueprint {
	b := blueprint.Empty()
	b.Metadata.Name = "c"
	b.Spec.Compliance = &blueprint.Compliance{Policies: []blueprint.Policy{
		{Name: "secure-boot", Type: "secureBoot", Mode: mode},
		{Name: "selinux", Type: "selinux", Mode: mode, State: "enforcing"},
		{Name: "apparmor-sshd", Type: "apparmor", Mode: mode, Profiles: []string{"/usr/sbin/sshd"}},
		{Name: "apparmor-meter", Type: "apparmor", Mode: mode, Profiles: []string{"meter"}},
		{Name: "luks-data", Type: "diskEncryption", Mode: mode, Mounts: []string{"/data", "/logs"}},
		{Name: "luks-root", Type: "diskEncryption", Mode: mode, Mounts: []string{"/"}},
		{Name: "no-root-ssh", Type: "fileContent", Mode: mode, Path: "/etc/ssh/sshd_config", Line: "PermitRootLogin no"},
	}}
	return b
}

func passes(rs []Result) map[string]bool {
	m := map[string]bool{}
	for _, r := range rs {
		m[r.Policy] = r.Pass
	}
	return m
}

func TestAuditReportsAndChangesNothing(t *testing.T) {
	root := fakeRoot(t)
	d := New(driver.Env{Root: root})
	p, err := d.Plan(context.Background(), policies("audit"))
	check.NoError(t, err)
	check.Equal(t, len(p), 0)
	got := passes(d.Results())
	want := map[string]bool{"secure-boot": true, "selinux": false, "apparmor-sshd": true, "apparmor-meter": false,
		"luks-data": true, "luks-root": false, "no-root-ssh": false}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: pass %v, want %v (%+v)", k, got[k], v, d.Results())
		}
	}
	score, n := d.Score()
	check.Equal(t, n, 7)
	check.Equal(t, score, 3.0/7)
	for _, r := range d.Results() {
		if r.Policy == "luks-root" && !strings.Contains(r.Message, "/ is on /dev/sda1, not LUKS") {
			t.Errorf("luks message: %q", r.Message)
		}
	}
	b, _ := os.ReadFile(filepath.Join(root, "etc/ssh/sshd_config"))
	if !strings.Contains(string(b), "PermitRootLogin yes") {
		t.Fatal("audit must not change files")
	}
}

func TestEnforceFixesFileAndScoreReachesStatus(t *testing.T) {
	root := fakeRoot(t)
	d := New(driver.Env{Root: root})
	var mu sync.Mutex
	var last engine.Status
	eng, err := engine.New(engine.Config{Drivers: []driver.Driver{d}, StateDir: t.TempDir(), Resync: time.Hour,
		OnStatus: func(s engine.Status) { mu.Lock(); last = s; mu.Unlock() }})
	check.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); eng.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	doc := `apiVersion: alpha/v1
kind: Blueprint
metadata: {name: c}
spec:
  compliance:
    policies:
      - {name: no-root-ssh, type: fileContent, mode: enforce, path: /etc/ssh/sshd_config, line: PermitRootLogin no}
      - {name: selinux, type: selinux, mode: enforce, state: enforcing}
`
	eng.Offer(engine.Candidate{Revision: 1, Data: []byte(doc)})
	check.For(t, 5*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		health := map[string]float64{}
		for _, r := range last.Resources {
			health[r.ID] = r.Health
		}
		if last.Phase != engine.PhaseConverged || health["compliance:no-root-ssh"] != 1 || health["compliance:selinux"] != 0 {
			return fmt.Errorf("status %+v", last)
		}
		return nil
	})
	b, err := os.ReadFile(filepath.Join(root, "etc/ssh/sshd_config"))
	check.NoError(t, err)
	check.Equal(t, string(b), "# PermitRootLogin prohibit-password\nPort 22\nPermitRootLogin no\nUsePAM yes\n")
	score, _ := d.Score()
	check.Equal(t, score, 0.5)
	for _, r := range d.Results() {
		if r.Policy == "selinux" && !strings.Contains(r.Message, "not enforceable") {
			t.Errorf("selinux in enforce mode should say it is reported only: %q", r.Message)
		}
	}
	// Edited back by hand: the watcher notices and the next pass enforces
	// again, without waiting for the hourly resync.
	write(t, root, "/etc/ssh/sshd_config", "PermitRootLogin yes\n")
	check.For(t, 3*time.Second, 10*time.Millisecond, func() error {
		b, _ := os.ReadFile(filepath.Join(root, "etc/ssh/sshd_config"))
		if string(b) != "PermitRootLogin no\n" {
			return fmt.Errorf("sshd_config is %q", b)
		}
		return nil
	})
}

func TestMissingSecurityFS(t *testing.T) {
	d := New(driver.Env{Root: t.TempDir()})
	_, err := d.Plan(context.Background(), policies("audit"))
	check.NoError(t, err)
	score, _ := d.Score()
	check.Equal(t, score, 0.0)
	for _, r := range d.Results() {
		if r.Message == "" {
			t.Errorf("%s: failure without a reason", r.Policy)
		}
	}
}
