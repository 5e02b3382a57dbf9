// Package oscmd runs the OS tools the agent's OS drivers drive (nft, ip,
// sysctl, modprobe), optionally behind a prefix such as "ip netns exec NS"
// so tests run the real tools inside a network namespace of their own.
package oscmd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"
)

// Runner runs commands. The zero value runs them directly on the node.
type Runner struct {
	// Prefix is prepended to every command line, e.g. ["ip", "netns",
	// "exec", "alpha-test-1"]. Empty in production.
	Prefix []string
}

// Netns returns a runner whose commands run inside the named network namespace.
func Netns(name string) Runner {
	return Runner{Prefix: []string{"ip", "netns", "exec", name}}
}

func (r Runner) cmd(ctx context.Context, name string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, r.Prefix...), name), args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// Run runs name with args, feeding stdin if not nil, and returns stdout. A
// failure carries the command line and what the tool wrote to stderr, which
// is where nft, ip and sysctl explain themselves.
func (r Runner) Run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, error) {
	c := r.cmd(ctx, name, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if stdin != nil {
		c.Stdin = bytes.NewReader(stdin)
	}
	if err := c.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return out.Bytes(), &Error{Cmd: name + " " + strings.Join(args, " "), Stderr: msg, Err: err}
	}
	return out.Bytes(), nil
}

// Stream runs a long-lived command (nft monitor, ip monitor) and calls fn for
// every line it prints, until ctx is done or the command exits.
func (r Runner) Stream(ctx context.Context, fn func(line string), name string, args ...string) error {
	c := r.cmd(ctx, name, args...)
	out, err := c.StdoutPipe()
	if err != nil {
		return err
	}
	var errb bytes.Buffer
	c.Stderr = &errb
	if err := c.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	_, _ = io.Copy(io.Discard, out)
	err = c.Wait()
	if ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return &Error{Cmd: name + " " + strings.Join(args, " "), Stderr: strings.TrimSpace(errb.String()), Err: err}
	}
	return fmt.Errorf("%s exited", name)
}

// Error is a command that failed.
type Error struct {
	Cmd    string
	Stderr string
	Err    error
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Cmd, e.Stderr) }

// Unwrap returns the exec error.
func (e *Error) Unwrap() error { return e.Err }

// Monitor keeps a monitor command (nft monitor, ip monitor) running until ctx
// is done, calling notify for each line it prints. When the command dies it
// is restarted after a wait growing from 1 s to 30 s, with a notify each
// time so drift that happened meanwhile is still found; a command that ran
// for over a minute starts the wait over. It always returns nil.
func (r Runner) Monitor(ctx context.Context, log *slog.Logger, notify func(reason string), name string, args ...string) error {
	label := name + " " + args[0]
	wait := time.Second
	for ctx.Err() == nil {
		started := time.Now()
		err := r.Stream(ctx, func(line string) {
			if strings.TrimSpace(line) != "" {
				notify(label + ": " + line)
			}
		}, name, args...)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn(label+" stopped; restarting", "err", err)
		notify(label + " restarted")
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		if time.Since(started) > time.Minute {
			wait = time.Second
		} else {
			wait = min(2*wait, 30*time.Second)
		}
	}
	return nil
}
