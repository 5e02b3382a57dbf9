package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	tfjson "github.com/hashicorp/terraform-json"

	"github.com/alpha-edge/alpha/blueprint"
	"github.com/alpha-edge/alpha/internal/fileio"
)

// Confinement runs Terraform, its providers and whatever they start as an
// unprivileged user with resource limits. The hub holds every tenant's
// credentials and the system account's; a tenant's configuration must reach
// none of them.
type Confinement struct {
	// UID and GID Terraform runs as; never 0. Give each tenant its own user
	// so one tenant's runs cannot read another's working directories.
	UID, GID uint32
	// Memory bounds the address space of each process (RLIMIT_AS); default
	// 4 GiB.
	Memory uint64
	// CPU bounds the CPU time of each process (RLIMIT_CPU); default 30m.
	CPU time.Duration
	// Procs bounds the user's processes at once (RLIMIT_NPROC); default 256.
	Procs uint64
}

// ErrExecRefused is wrapped when a configuration uses a provisioner or the
// external data source and the hub's operator has not allowed it.
var ErrExecRefused = errors.New("runs programs on the hub")

// maxStateFile bounds what the hub reads back from a working directory,
// which the confined user controls.
const maxStateFile = 64 << 20

// scrubbedPath is the only PATH Terraform sees: nothing from the hub's own
// environment reaches it.
const scrubbedPath = "/usr/local/bin:/usr/bin:/bin"

func (c *Confinement) defaults() error {
	if c.UID == 0 || c.GID == 0 {
		return fmt.Errorf("cloud: confinement uid %d gid %d: Terraform must not run as root", c.UID, c.GID)
	}
	if c.Memory == 0 {
		c.Memory = 4 << 30
	}
	if c.CPU <= 0 {
		c.CPU = 30 * time.Minute
	}
	if c.Procs == 0 {
		c.Procs = 256
	}
	return nil
}

// wrapper writes the script Terraform is started through: prlimit sets the
// limits, setpriv drops to the user (and every capability with root). The
// script lives in the root-owned work directory, out of the user's reach:
// the hub runs it as root.
func (r *Reconciler) wrapper(terraform string) (string, error) {
	c := r.cfg.Confine
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		return "", fmt.Errorf("confining terraform needs prlimit (util-linux): %w", err)
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return "", fmt.Errorf("confining terraform needs setpriv (util-linux): %w", err)
	}
	timeout, err := exec.LookPath("timeout")
	if err != nil {
		return "", fmt.Errorf("confining terraform needs timeout (coreutils): %w", err)
	}
	// timeout leads its own process group and signals all of it, so what a
	// provisioner started does not outlive an interrupted run (terraform-exec
	// signals only the process it started).
	script := fmt.Sprintf("#!/bin/sh\n# Written by the Alpha hub: Terraform runs confined (hub/cloud/confine.go).\n"+
		"exec %s --kill-after=10 %d %s --as=%d --cpu=%d --nproc=%d --nofile=4096 --core=0 -- %s --reuid=%d --regid=%d --clear-groups --no-new-privs -- %s \"$@\"\n",
		timeout, int64(r.cfg.Timeout/time.Second)+1, prlimit, c.Memory, int64(c.CPU/time.Second), c.Procs, setpriv, c.UID, c.GID, terraform)
	path := filepath.Join(r.cfg.WorkDir, "terraform-confined")
	// Replaced, never rewritten in place: a run may be reading it.
	return path, fileio.WriteFile(path, []byte(script), 0o700)
}

// openConfined lays out the work directory for a confined user: WorkDir and
// runs/ belong to root (0711: the user may pass, not list or rename), each
// run directory to the user (0700). Terraform resolves its working
// directory by absolute path, so every ancestor must let the user pass;
// those that do not get the search bit for others, never read or write.
func (r *Reconciler) openConfined() error {
	for _, d := range []string{r.cfg.WorkDir, filepath.Join(r.cfg.WorkDir, "runs")} {
		if err := os.Chown(d, 0, 0); err != nil {
			return fmt.Errorf("cloud: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return fmt.Errorf("cloud: %w", err)
		}
	}
	abs, err := filepath.Abs(r.cfg.WorkDir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("cloud: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o001); err != nil {
				return fmt.Errorf("cloud: letting terraform's user pass %s: %w", d, err)
			}
			r.log.Info("added search permission for others so confined terraform reaches its work directory", "dir", d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// runDir makes a configuration's working directory and opens it as a root
// the hub's own file operations cannot escape: the directory belongs to
// the confined user, who may have planted symlinks, FIFOs or huge files.
func (r *Reconciler) runDir(key string) (string, *os.Root, error) {
	dir := filepath.Join(r.cfg.WorkDir, "runs", key)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return "", nil, err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return "", nil, err
	}
	if !fi.IsDir() {
		return "", nil, fmt.Errorf("working directory %s is not a directory", dir)
	}
	if c := r.cfg.Confine; c != nil {
		if err := os.Lchown(dir, int(c.UID), int(c.GID)); err != nil {
			return "", nil, err
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", nil, err
	}
	return dir, root, nil
}

// handOver gives everything in a run directory to the confined user, so
// Terraform can rewrite its state and lock file.
func (r *Reconciler) handOver(root *os.Root) error {
	c := r.cfg.Confine
	if c == nil {
		return nil
	}
	return fs.WalkDir(root.FS(), ".", func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return root.Lchown(p, int(c.UID), int(c.GID))
	})
}

// readLimited reads a regular file of the run directory, refusing anything
// else (a FIFO would block the hub, a device or a huge file exhaust it).
func readLimited(root *os.Root, name string) ([]byte, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s)", name, fi.Mode().Type())
	}
	data, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxStateFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, maxStateFile)
	}
	return data, nil
}

// checkExec refuses a configuration whose Terraform files use a provisioner
// or the external data source, unless the operator allowed them. It reads
// what prepare laid out (inline main.tf or the module's files), before any
// Terraform step runs.
func (r *Reconciler) checkExec(root *os.Root) error {
	if r.cfg.AllowExec {
		return nil
	}
	var found []string
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".terraform" {
			return fs.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".tf") || strings.HasSuffix(p, ".tf.json")) {
			return nil
		}
		data, err := readLimited(root, p)
		if err != nil {
			return err
		}
		for _, u := range blueprint.ExecUses(string(data)) {
			found = append(found, p+": "+u)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("checking for provisioners: %w", err)
	}
	return execRefused(found)
}

// execRefused is the refusal naming what was found; the caller adds the
// configuration's name.
func execRefused(found []string) error {
	if len(found) == 0 {
		return nil
	}
	sort.Strings(found)
	return fmt.Errorf("refused: it %w (%s); provisioners and the external data source need the hub's --cloud-allow-exec for this tenant",
		ErrExecRefused, strings.Join(found, ", "))
}

// checkInstalled is the second look, with Terraform's own reading after
// init: the lock file names every provider the configuration and its
// modules need, and the external data source needs hashicorp/external.
func (r *Reconciler) checkInstalled(root *os.Root, config string) error {
	if r.cfg.AllowExec {
		return nil
	}
	data, err := readLimited(root, ".terraform.lock.hcl")
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("configuration %q: %w", config, err)
	}
	if strings.Contains(string(data), "/hashicorp/external\"") {
		return fmt.Errorf("configuration %q: %w", config, execRefused([]string{"provider hashicorp/external"}))
	}
	return nil
}

// scrubbedEnv is Terraform's whole environment: nothing of the hub's own
// (which may hold secrets) is inherited; what a tenant's providers need
// comes from Config.Env, which the operator sets per tenant.
func (r *Reconciler) scrubbedEnv(dir string) map[string]string {
	env := map[string]string{}
	for k, v := range r.cfg.Env {
		env[k] = v
	}
	env["PATH"] = scrubbedPath
	env["HOME"] = dir
	env["TF_CLI_CONFIG_FILE"] = r.cliConfig
	env["CHECKPOINT_DISABLE"] = "1" // never phone home from the hub
	return env
}

// runContext bounds one pass of Terraform steps by Config.Timeout.
func (r *Reconciler) runContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.cfg.Timeout)
}

// checkPlan is the last look before apply, at the configuration as
// Terraform itself parsed it (modules included): provisioners run only at
// apply, so this refusal comes in time even for one the text scan missed.
func (r *Reconciler) checkPlan(p *tfjson.Plan, config string) error {
	if r.cfg.AllowExec || p == nil || p.Config == nil {
		return nil
	}
	var found []string
	var walk func(prefix string, m *tfjson.ConfigModule)
	walk = func(prefix string, m *tfjson.ConfigModule) {
		if m == nil {
			return
		}
		for _, res := range m.Resources {
			for _, pv := range res.Provisioners {
				found = append(found, fmt.Sprintf("%s%s: provisioner %q", prefix, res.Address, pv.Type))
			}
			if res.Mode == tfjson.DataResourceMode && res.Type == blueprint.ExecExternal {
				found = append(found, prefix+res.Address)
			}
		}
		for name, mc := range m.ModuleCalls {
			if mc != nil {
				walk(prefix+"module."+name+".", mc.Module)
			}
		}
	}
	walk("", p.Config.RootModule)
	if err := execRefused(found); err != nil {
		return fmt.Errorf("configuration %q: %w", config, err)
	}
	return nil
}
