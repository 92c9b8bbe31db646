package main

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
)

// syncBuffer is a bytes.Buffer safe for the timer's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Split(strings.TrimSpace(b.buf.String()), "\n")
}

// TestMetricRetryLogThrottled: many transactions retrying at once during an
// outage log one warning, not one each; the streak ends with one info line
// once no transaction retried for the quiet spell, and the next retry starts
// a new streak.
func TestMetricRetryLogThrottled(t *testing.T) {
	var out syncBuffer
	r := &retryLog{log: zerolog.New(&out), quiet: 200 * time.Millisecond}
	defer r.stop()
	err := errors.New("transient database error: dial tcp: connect: connection refused")
	var wg sync.WaitGroup
	for range 50 { // 50 transactions in flight, 4 retries each
		wg.Go(func() {
			for a := 1; a <= 4; a++ {
				r.retry(a, err, 10*time.Millisecond)
			}
		})
	}
	wg.Wait()
	require.Len(t, out.lines(), 1)
	require.Contains(t, out.lines()[0], `"level":"warn"`)
	require.Contains(t, out.lines()[0], `"failures":1,`)
	require.Contains(t, out.lines()[0], "retrying the transaction")

	require.Eventually(t, func() bool { return len(out.lines()) == 2 }, 5*time.Second, 10*time.Millisecond)
	end := out.lines()[1]
	require.Contains(t, end, `"level":"info"`)
	require.Contains(t, end, `"failures":200,`)
	require.Contains(t, end, "stopped")

	r.retry(1, err, time.Millisecond)
	require.Len(t, out.lines(), 3)
	require.Contains(t, out.lines()[2], `"failures":1,`)
}
