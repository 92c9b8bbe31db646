// Package testlog holds what tests use to read logs written while they run.
package testlog

import (
	"bytes"
	"strings"
	"sync"
)

// Buffer collects log lines written from many goroutines (a logger, a
// child process's output) while a test reads them.
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

// LastLines is the last n lines of s, for a failure message; a final
// newline ends the last line rather than starting an empty one.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
