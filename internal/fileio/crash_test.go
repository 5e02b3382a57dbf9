package fileio

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/alpha-edge/alpha/internal/testkit/check"
)

// The crash test re-runs this test binary as a child that stops inside a
// write at the stage named by crashAtEnv and waits there to be killed.
const (
	crashAtEnv   = "ALPHA_FILEIO_CRASH_AT"
	crashPathEnv = "ALPHA_FILEIO_CRASH_PATH"
)

// Sizes differ and are large enough that a torn or truncated file cannot
// pass for either.
var (
	crashOld = bytes.Repeat([]byte("old content "), 1<<16)
	crashNew = bytes.Repeat([]byte("NEW CONTENT, longer "), 3<<16)
)

func TestMain(m *testing.M) {
	if stage := os.Getenv(crashAtEnv); stage != "" {
		crashChild(stage, os.Getenv(crashPathEnv))
		return
	}
	os.Exit(m.Run())
}

// crashChild writes crashNew over path and, at stage, says "ready" and
// blocks on stdin, which the parent never closes before it kills us.
func crashChild(stage, path string) {
	testHook = func(s string) {
		if s != stage {
			return
		}
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}
	err := WriteFile(path, crashNew, 0o644)
	fmt.Printf("the write finished without stopping at %q: %v\n", stage, err)
	os.Exit(4)
}

func TestCrashLeavesOldOrNewContentWhole(t *testing.T) {
	for _, tc := range []struct {
		stage string
		want  []byte
		mode  os.FileMode
	}{
		{"written", crashOld, 0o600}, // killed between write+fsync and rename
		{"renamed", crashNew, 0o644}, // killed right after the rename
	} {
		t.Run(tc.stage, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "replay.json")
			check.NoError(t, WriteFile(p, crashOld, 0o600))

			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), crashAtEnv+"="+tc.stage, crashPathEnv+"="+p)
			cmd.Stderr = os.Stderr
			stdin, err := cmd.StdinPipe()
			check.NoError(t, err)
			defer stdin.Close()
			stdout, err := cmd.StdoutPipe()
			check.NoError(t, err)
			check.NoError(t, cmd.Start())
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if line != "ready\n" {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("child did not stop at %q: said %q (%v)", tc.stage, line, err)
			}
			// The child is inside WriteFile now.
			check.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
			err = cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed by SIGKILL: %v", err)
			}

			got, err := os.ReadFile(p)
			check.NoError(t, err)
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("after a kill at %q %s holds %d bytes starting %.20q, want %d bytes starting %.20q",
					tc.stage, p, len(got), got, len(tc.want), tc.want)
			}
			check.Equal(t, perm(t, p), tc.mode)

			// What the crash left (at most its temp file) does not stop
			// the next write, and that write leaves nothing of its own.
			// Before the rename the new content sat whole in a temp file.
			before := names(t, dir)
			if tmps := strings.Count(before, ".tmp"); tc.stage == "written" && tmps != 1 || tc.stage == "renamed" && tmps != 0 {
				t.Fatalf("after a kill at %q the directory holds %q", tc.stage, before)
			}
			check.NoError(t, WriteFile(p, []byte("after"), 0o600))
			check.Equal(t, readFile(t, p), "after")
			check.Equal(t, names(t, dir), before)
		})
	}
}
