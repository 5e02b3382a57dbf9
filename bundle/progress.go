package bundle

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Progress draws one line of bytes and artifacts on a terminal. A nil
// Progress draws nothing, so callers need not check.
type Progress struct {
	w         io.Writer
	label     string
	total     int64 // bytes expected, 0 if unknown
	mu        sync.Mutex
	n         int64
	artifacts int
	last      time.Time
}

// NewProgress returns a Progress on w if w is a terminal, else nil: logs
// and files get no bar.
func NewProgress(w *os.File, label string, total int64) *Progress {
	if w == nil {
		return nil
	}
	fi, err := w.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return &Progress{w: w, label: label, total: total}
}

func (p *Progress) setTotal(n int64) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.total = n
	p.mu.Unlock()
}

func (p *Progress) bytes() io.Writer {
	if p == nil {
		return io.Discard
	}
	return progressWriter{p}
}

type progressWriter struct{ p *Progress }

func (pw progressWriter) Write(b []byte) (int, error) {
	pw.p.add(int64(len(b)))
	return len(b), nil
}

func (p *Progress) add(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += n
	if time.Since(p.last) > 200*time.Millisecond {
		p.draw()
	}
}

func (p *Progress) artifact() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.artifacts++
	p.draw()
	p.mu.Unlock()
}

func (p *Progress) done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.draw()
	fmt.Fprintln(p.w)
	p.mu.Unlock()
}

// draw rewrites the line; p.mu is held.
func (p *Progress) draw() {
	p.last = time.Now()
	line := fmt.Sprintf("\r%s %s, %d artifacts", p.label, mib(p.n), p.artifacts)
	if p.total > 0 {
		const width = 30
		filled := int(min(p.n, p.total) * width / p.total)
		bar := make([]byte, width)
		for i := range bar {
			bar[i] = ' '
			if i < filled {
				bar[i] = '='
			}
		}
		line = fmt.Sprintf("\r%s [%s] %s / %s, %d artifacts", p.label, bar, mib(p.n), mib(p.total), p.artifacts)
	}
	fmt.Fprint(p.w, line)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
