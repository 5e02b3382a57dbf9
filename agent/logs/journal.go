package logs

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/alpha-edge/alpha/streams"
)

// journalKey is the journal's key in the state file: one journalctl
// follows every selected unit, so one cursor covers them.
const journalKey = "journal"

// journal follows units through `journalctl --output=json --follow`, the
// journal's own reader (no file parsing here), resuming after the cursor of
// the last line the site acked.
type journal struct {
	s     *Shipper
	sel   Selection
	units []string
}

func (j *journal) follow(ctx context.Context) {
	gates := map[string]*gate{}
	for _, u := range j.units {
		gates[u] = newGate(j.sel)
	}
	// A node without journalctl, or a journal that keeps failing, is said
	// once at WARN, then retried with a growing pause.
	wait, warned := time.Second, false
	for ctx.Err() == nil {
		start := time.Now()
		err := j.once(ctx, gates)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			wait, warned = time.Second, false // it had been working
		}
		if !warned {
			j.s.log.Warn("journal reader stopped; starting it again", "units", j.units, "err", err)
			warned = true
		} else {
			j.s.log.Debug("journal reader stopped again", "units", j.units, "err", err, "retry", wait)
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// args are journalctl's arguments after cursor: with none (a first run)
// it starts at the current boot, so lines a unit wrote before the agent
// followed it are shipped too.
func (j *journal) args(cursor string) []string {
	args := slices.Clone(j.s.cfg.Journal[1:])
	args = append(args, "--output=json", "--follow", "--no-pager", "--all")
	if cursor != "" {
		args = append(args, "--after-cursor="+cursor)
	} else {
		args = append(args, "--boot", "--lines=all")
	}
	for _, u := range j.units {
		args = append(args, "--unit="+u)
	}
	return args
}

func (j *journal) once(ctx context.Context, gates map[string]*gate) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(cctx, j.s.cfg.Journal[0], j.args(j.s.Position(journalKey))...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", j.s.cfg.Journal[0], err)
	}
	defer cmd.Wait() // after an early return; a second Wait is harmless
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		e, err := parseEntry(sc.Bytes())
		if err != nil {
			j.s.log.Debug("journal entry not understood", "err", err)
			continue
		}
		unit := e.unit(j.units)
		g := gates[unit]
		if g == nil {
			continue
		}
		line := streams.LogLine{TS: e.ts, Site: j.s.cfg.Site, Node: j.s.cfg.Node, Kind: streams.LogUnit, Source: unit,
			Level: e.level(), Text: e.message(), ID: journalID(j.s.cfg.Node, e.cursor)}
		if !j.s.offer(ctx, g, item{line: line, key: journalKey, pos: e.cursor}) {
			return ctx.Err()
		}
	}
	cancel()
	werr := cmd.Wait()
	if err := sc.Err(); err != nil {
		return err
	}
	return fmt.Errorf("journalctl ended: %v: %s", werr, strings.TrimSpace(stderr.String()))
}

// journalID derives a line's id from its cursor, the journal's own name
// for the entry, so the same entry read twice has the same id.
func journalID(node, cursor string) string {
	sum := sha256.Sum256([]byte(cursor))
	return node + ".j." + hex.EncodeToString(sum[:12])
}

// entry is one journal entry of journalctl's JSON output. Fields are text,
// or arrays of bytes when not valid UTF-8.
type entry map[string]json.RawMessage

type parsed struct {
	fields map[string]string
	cursor string
	ts     time.Time
}

func parseEntry(b []byte) (parsed, error) {
	var raw entry
	if err := json.Unmarshal(b, &raw); err != nil {
		return parsed{}, err
	}
	p := parsed{fields: map[string]string{}}
	for k, v := range raw {
		var s string
		if json.Unmarshal(v, &s) == nil {
			p.fields[k] = s
			continue
		}
		var bs []byte
		var ints []int
		if json.Unmarshal(v, &ints) == nil {
			for _, i := range ints {
				bs = append(bs, byte(i))
			}
			p.fields[k] = strings.ToValidUTF8(string(bs), "\uFFFD")
		}
	}
	p.cursor = p.fields["__CURSOR"]
	if p.cursor == "" {
		return p, fmt.Errorf("entry without __CURSOR")
	}
	if us, err := strconv.ParseInt(p.fields["__REALTIME_TIMESTAMP"], 10, 64); err == nil {
		p.ts = time.UnixMicro(us).UTC()
	} else {
		p.ts = time.Now().UTC()
	}
	return p, nil
}

// unit is the selected unit the entry belongs to: written by it, or
// written by systemd about it (Started, Failed).
func (p parsed) unit(selected []string) string {
	for _, f := range []string{"_SYSTEMD_UNIT", "UNIT", "OBJECT_SYSTEMD_UNIT", "COREDUMP_UNIT", "_SYSTEMD_USER_UNIT", "USER_UNIT"} {
		if u := p.fields[f]; u != "" && slices.Contains(selected, u) {
			return u
		}
	}
	return ""
}

func (p parsed) level() string {
	if n, err := strconv.Atoi(p.fields["PRIORITY"]); err == nil && n >= 0 && n < len(streams.Levels) {
		return streams.Levels[n]
	}
	return "info"
}

func (p parsed) message() string { return strings.TrimRight(p.fields["MESSAGE"], "\n") }
