package cloud

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	tfjson "github.com/hashicorp/terraform-json"
)

// The plan check sees what Terraform parsed, modules included: a
// provisioner the text scan could not see is still refused before apply.
func TestCheckPlanFindsNestedProvisioner(t *testing.T) {
	r := &Reconciler{}
	p := &tfjson.Plan{Config: &tfjson.Config{RootModule: &tfjson.ConfigModule{
		ModuleCalls: map[string]*tfjson.ModuleCall{"net": {Module: &tfjson.ConfigModule{
			Resources: []*tfjson.ConfigResource{
				{Address: "terraform_data.x", Provisioners: []*tfjson.ConfigProvisioner{{Type: "local-exec"}}},
				{Address: "data.external.y", Mode: tfjson.DataResourceMode, Type: "external"},
			},
		}}},
	}}}
	err := r.checkPlan(p, "c")
	if !errors.Is(err, ErrExecRefused) {
		t.Fatalf("got %v, want ErrExecRefused", err)
	}
	for _, want := range []string{`module.net.terraform_data.x: provisioner "local-exec"`, "module.net.data.external.y", `configuration "c"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not say %q", err, want)
		}
	}
	r.cfg.AllowExec = true
	if err := r.checkPlan(p, "c"); err != nil {
		t.Fatalf("allowed: %v", err)
	}
}

func TestCheckInstalledRefusesExternalProvider(t *testing.T) {
	dir := t.TempDir()
	lock := "provider \"registry.terraform.io/hashicorp/external\" {\n  version = \"2.3.4\"\n}\n"
	if err := os.WriteFile(filepath.Join(dir, ".terraform.lock.hcl"), []byte(lock), 0o600); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := (&Reconciler{}).checkInstalled(root, "c"); !errors.Is(err, ErrExecRefused) {
		t.Fatalf("got %v, want ErrExecRefused", err)
	}
}

// What the hub reads back from a run directory the confined user controls:
// never through a symlink out of it, never a FIFO (that would block it), never more
// than the limit.
func TestReadLimitedRefusesPlantedFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(t.TempDir(), "sys.creds")
	if err := os.WriteFile(secret, []byte("SUASECRET"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(run, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, "inside"), []byte("ok"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(run, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(run, "big"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(maxStateFile + 1); err != nil {
		t.Fatal(err)
	}
	big.Close()
	root, err := os.OpenRoot(run)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, name := range []string{"escape", "fifo", "big"} {
		data, err := readLimited(root, name)
		if err == nil {
			t.Errorf("%s: read %q", name, data)
		}
		if strings.Contains(string(data), "SUASECRET") {
			t.Errorf("%s: read the secret", name)
		}
	}
	if data, err := readLimited(root, "inside"); err != nil || string(data) != "ok" {
		t.Errorf("inside: %q %v", data, err)
	}
}
