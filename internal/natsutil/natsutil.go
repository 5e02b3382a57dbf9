// Package natsutil holds what hub, leaf and agent share about running an
// embedded nats-server: slog logging, address parsing and waiting for ready.
package natsutil

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Logger adapts slog to nats-server's logger interface.
type Logger struct {
	L     *slog.Logger
	fatal chan<- string // Start's: the first fatal message, if any
	// denied rate-limits the server's permission violation lines (one per
	// refused message): WARN once per subject, then once a minute.
	denied *Denials
}

var _ server.Logger = Logger{}

// Noticef logs at info.
func (l Logger) Noticef(format string, v ...any) { l.L.Info(fmt.Sprintf(format, v...)) }

// Warnf logs at warn.
func (l Logger) Warnf(format string, v ...any) { l.L.Warn(fmt.Sprintf(format, v...)) }

// Fatalf logs at error; the server stops itself, and Start returns it.
func (l Logger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.L.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}

// Errorf logs at error, except permission violations (see Logger.denied).
func (l Logger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if l.denied != nil && strings.Contains(msg, "Violation") {
		l.denied.Note(msg, time.Now())
		return
	}
	l.L.Error(msg)
}

// Debugf logs at debug.
func (l Logger) Debugf(format string, v ...any) { l.L.Debug(fmt.Sprintf(format, v...)) }

// Tracef logs at debug.
func (l Logger) Tracef(format string, v ...any) { l.L.Debug(fmt.Sprintf(format, v...)) }

// ServerLogLevel reads ALPHA_NATS_LOG: "debug" turns on the embedded
// nats-server's own debug lines (connections, mirror retries), "trace" every
// protocol message as well (heavy: for one site at a time). They reach the
// process's log at its debug level, so ALPHA_LOG=debug goes with it. Off by
// default, and not tied to ALPHA_LOG, because tests that log at debug would
// collect the server's flood.
func ServerLogLevel() (debug, trace bool) {
	switch os.Getenv("ALPHA_NATS_LOG") {
	case "debug":
		return true, false
	case "trace":
		return true, true
	}
	return false, false
}

// SplitAddr parses HOST:PORT; port -1 picks a free one (tests).
func SplitAddr(what, addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: want HOST:PORT: %w", what, addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q: port %q is not a number in 0-65535", what, addr, p)
	}
	return host, port, nil
}

// Start runs the server and waits until it accepts clients. A fatal error
// while starting (an address in use) is returned as it happens, rather
// than as "not ready" 10 s later.
func Start(s *server.Server, log *slog.Logger) error {
	fatal := make(chan string, 1)
	debug, trace := ServerLogLevel()
	s.SetLoggerV2(Logger{L: log, fatal: fatal, denied: &Denials{Log: log}}, debug, trace, false)
	s.Start()
	ready := make(chan bool, 1)
	go func() { ready <- s.ReadyForConnections(10 * time.Second) }()
	select {
	case ok := <-ready:
		if ok {
			return nil
		}
		s.Shutdown()
		return fmt.Errorf("nats server %s not ready after 10s", s.Name())
	case msg := <-fatal:
		s.Shutdown()
		return fmt.Errorf("nats server %s: %s", s.Name(), msg)
	}
}
