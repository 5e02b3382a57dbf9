package check

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects what a server, a logger or a command writes while the
// test reads it: a bytes.Buffer safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Buffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is everything written so far.
func (l *Buffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Count is how often s occurs in what was written.
func (l *Buffer) Count(s string) int { return strings.Count(l.String(), s) }
