package worker

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestExpiryOutageLogsOnce: while the database fails, the expiry scheduler
// backs off (100 ms doubling, at most 1 s) and logs its first failure only, not one line
// a second: over about 2 s (four or five attempts), one line, where a
// fixed 1 s retry logged each attempt. Any window under 30 s gives one.
func TestExpiryOutageLogsOnce(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs lockedBuffer
	w := &Worker{cfg: Config{Store: st}, log: zerolog.New(&logs)}
	p := &partition{w: w, id: 3, wake: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 2100*time.Millisecond)
	defer cancel()
	p.scheduleExpiry(ctx)
	require.Equal(t, 1, strings.Count(logs.String(), "expiry scheduler: reading next due time"), logs.String())
	require.Contains(t, logs.String(), `"failures":1,`)
}

// TestExpiryOutageRetriesEverySecond: the scheduler's pause after a
// failure grows from 100 ms but never past maxExpirySleep (1 s), so a lease
// due during an outage ends within about 1 s of the database's return.
func TestExpiryOutageRetriesEverySecond(t *testing.T) {
	require.Equal(t, time.Second, maxExpirySleep)
	for n := 1; n <= 20; n++ {
		want := min(100*time.Millisecond<<(n-1), time.Second)
		require.LessOrEqual(t, expiryRetryIn(n), want, "failure %d", n)
		require.GreaterOrEqual(t, expiryRetryIn(n), want*4/5, "failure %d", n)
	}
}

// TestExpiryOutageWakeEndsRetry: while the scheduler waits to retry a
// failure, a committed batch wakes it even when it started nothing due
// before the wait ends: the database is back, and leases may be due.
func TestExpiryOutageWakeEndsRetry(t *testing.T) {
	p := &partition{wake: make(chan struct{}, 1)}
	p.sleepsUntil.Store(time.Now().Add(time.Hour).UnixNano())
	p.wakeScheduler(time.Time{})
	require.Len(t, p.wake, 0, "an ordinary sleep: a batch that starts nothing sooner does not wake it")

	p.retrying.Store(true)
	p.wakeScheduler(time.Time{})
	require.Len(t, p.wake, 1, "a commit during a retry wait wakes the scheduler")
}
