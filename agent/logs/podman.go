package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v5/pkg/bindings"
	"github.com/containers/podman/v5/pkg/bindings/containers"

	"github.com/alpha-edge/alpha/streams"
)

// DefaultPodmanURI is rootful podman's API socket.
const DefaultPodmanURI = "unix:///run/podman/podman.sock"

// podman follows containers' output through podman's REST API.
type podman struct {
	s   *Shipper
	uri string

	mu   sync.Mutex
	conn context.Context
}

// client returns a context carrying the bindings' connection (made once).
func (p *podman) client(ctx context.Context) (context.Context, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		uri := p.uri
		if uri == "" {
			uri = DefaultPodmanURI
		}
		if path, ok := strings.CutPrefix(uri, "unix://"); ok {
			if _, err := os.Stat(path); err != nil {
				return nil, fmt.Errorf("podman at %s: %w", uri, err)
			}
		}
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := bindings.NewConnection(pctx, uri)
		if err != nil {
			return nil, fmt.Errorf("podman at %s: %w", uri, err)
		}
		p.conn = c
	}
	return withValues{ctx, p.conn}, nil
}

// withValues takes cancellation from the caller's context and the podman
// client from the connection's.
type withValues struct {
	context.Context
	values context.Context
}

func (w withValues) Value(k any) any {
	if v := w.Context.Value(k); v != nil {
		return v
	}
	return w.values.Value(k)
}

// cpos is where a container's output was left: the container's id, the
// second of its last shipped line (podman's timestamps have whole seconds)
// and how many lines of that second were shipped.
type cpos struct {
	id  string
	sec int64
	n   int
}

func (c cpos) String() string {
	return c.id + " " + strconv.FormatInt(c.sec, 10) + " " + strconv.Itoa(c.n)
}

func parseCPos(s string) cpos {
	f := strings.Fields(s)
	if len(f) != 3 {
		return cpos{}
	}
	sec, _ := strconv.ParseInt(f[1], 10, 64)
	n, _ := strconv.Atoi(f[2])
	return cpos{id: f[0], sec: sec, n: n}
}

// follow ships one container's output until ctx is done, across restarts
// and replacements of the container (a new id starts at its first line).
func (p *podman) follow(ctx context.Context, name string, sel Selection) {
	key := sourceKey(streams.LogContainer, name)
	g := newGate(sel)
	// pos is the reader's own position: ahead of the acked one in the
	// state file while lines wait in the queue.
	pos := parseCPos(p.s.Position(key))
	quiet := false
	for ctx.Err() == nil {
		next, err := p.once(ctx, name, key, g, pos)
		if err != nil && ctx.Err() == nil && !quiet {
			p.s.log.Debug("container output not readable yet", "container", name, "err", err)
		}
		quiet = err != nil
		pos = next
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// once reads the container's output from pos on, following it while the
// container runs; it returns the position reached.
func (p *podman) once(ctx context.Context, name, key string, g *gate, pos cpos) (cpos, error) {
	cctx, err := p.client(ctx)
	if err != nil {
		return pos, err
	}
	data, err := containers.Inspect(cctx, name, nil)
	if err != nil {
		return pos, err
	}
	if data.Name != name {
		return pos, fmt.Errorf("no container named %q", name)
	}
	if data.ID != pos.id {
		pos = cpos{id: data.ID} // created or replaced: from its first line
	}
	conn, err := bindings.GetClient(cctx)
	if err != nil {
		return pos, err
	}
	params := (&containers.LogOptions{}).WithFollow(true).WithTimestamps(true).WithStdout(true).WithStderr(true)
	if pos.sec > 0 {
		params = params.WithSince(strconv.FormatInt(pos.sec, 10))
	}
	values, err := params.ToParams()
	if err != nil {
		return pos, err
	}
	resp, err := conn.DoRequest(cctx, nil, http.MethodGet, "/containers/%s/logs", values, nil, pos.id)
	if err != nil {
		return pos, err
	}
	defer resp.Body.Close()
	if !resp.IsSuccess() {
		return pos, resp.Process(nil)
	}
	// Lines of the position's second already shipped come again (since
	// has whole seconds): skip that many.
	skip := pos.n
	// A line conmon read in pieces comes as frames without a newline
	// before the one that ends it: joined, it is one line, stamped with
	// its first piece's time. Stdout and stderr are joined apart.
	var partial [3]strings.Builder
	var partialTS [3]time.Time
	buf := make([]byte, 4096)
	for {
		fd, l, err := containers.DemuxHeader(resp.Body, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return pos, nil
			}
			return pos, err
		}
		frame, err := containers.DemuxFrame(resp.Body, buf, l)
		if err != nil {
			return pos, err
		}
		if fd == 3 {
			return pos, errors.New("podman: " + string(frame))
		}
		if fd > 2 {
			return pos, fmt.Errorf("podman: unknown stream %d in the log", fd)
		}
		ts, text := splitTimestamp(string(frame))
		if partial[fd].Len() == 0 {
			partialTS[fd] = ts
		}
		partial[fd].WriteString(text)
		if !strings.HasSuffix(text, "\n") {
			continue
		}
		ts, text = partialTS[fd], strings.TrimSuffix(partial[fd].String(), "\n")
		partial[fd].Reset()
		for _, text := range strings.Split(text, "\n") {
			sec := ts.Unix()
			if sec < pos.sec {
				continue
			}
			if sec == pos.sec && skip > 0 {
				skip--
				continue
			}
			if sec == pos.sec {
				pos.n++
			} else {
				pos.sec, pos.n, skip = sec, 1, 0
			}
			line := streams.LogLine{TS: ts, Site: p.s.cfg.Site, Node: p.s.cfg.Node, Kind: streams.LogContainer, Source: name,
				Level: guessLevel(text), Text: text,
				ID: fmt.Sprintf("%s.c.%.12s.%d.%d", p.s.cfg.Node, pos.id, pos.sec, pos.n)}
			if !p.s.offer(ctx, g, item{line: line, key: key, pos: pos.String()}) {
				return pos, ctx.Err()
			}
		}
	}
}

// splitTimestamp cuts podman's timestamp off a line; a line without one
// gets the time it was read.
func splitTimestamp(raw string) (time.Time, string) {
	if i := strings.IndexByte(raw, ' '); i > 0 {
		if ts, err := time.Parse(time.RFC3339Nano, raw[:i]); err == nil {
			return ts.UTC(), raw[i+1:]
		}
	}
	return time.Now().UTC(), raw
}

// guessLevel reads a level from the first words of a container's line
// (level=warn, [ERROR], WARNING:); without one a line is info, on stderr
// too, which carries info as often as errors.
func guessLevel(text string) string {
	head := strings.ToLower(text[:min(len(text), 48)])
	words := strings.FieldsFunc(head, func(r rune) bool { return !(r >= 'a' && r <= 'z') })
	// Only the first words: "no error found" further on is not a level.
	for _, w := range words[:min(len(words), 2)] {
		switch w {
		case "emerg", "panic", "fatal":
			return "emerg"
		case "alert":
			return "alert"
		case "crit", "critical":
			return "crit"
		case "err", "error":
			return "err"
		case "warn", "warning":
			return "warning"
		case "notice":
			return "notice"
		case "info":
			return "info"
		case "debug", "trace":
			return "debug"
		}
	}
	return "info"
}
