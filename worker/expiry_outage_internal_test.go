package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// TestExpiryOutageLogsOnce: while the database fails, the expiry scheduler
// backs off (100 ms doubling, at most 1 s) and logs its first failure only, not one line
// a second: over about 2 s (four or five attempts), one line, where a
// fixed 1 s retry logged each attempt. Any window under 30 s gives one.
func TestExpiryOutageLogsOnce(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs testlog.Buffer
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

// TestExpiryOutageCommitWakesOncePerStreak: a wake left from a commit before
// the failure does not end the retry's wait, a commit during it does, and
// when the attempt that commit brought fails too, the rest of the streak
// waits its pauses out rather than querying again at every commit.
func TestExpiryOutageCommitWakesOncePerStreak(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	w := &Worker{cfg: Config{Store: st}, log: zerolog.Nop()}
	p := &partition{w: w, id: 3, wake: make(chan struct{}, 1)}
	p.wake <- struct{}{} // a commit's, from before the outage
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.scheduleExpiry(ctx)
	}()
	defer func() { cancel(); <-done }()
	waiting := func(retrying bool) func() bool {
		return func() bool { return p.sleepsUntil.Load() != 0 && p.retrying.Load() == retrying }
	}
	require.Eventually(t, waiting(true), 10*time.Second, time.Millisecond)
	require.Never(t, waiting(false), 300*time.Millisecond, time.Millisecond,
		"the wake from before the failure ended the wait, and took the streak's one commit wake")

	p.wakeScheduler(time.Time{}) // a commit: the database seems back
	require.Eventually(t, waiting(false), 10*time.Second, time.Millisecond,
		"the attempt the commit brought failed: the streak waits its pauses out")
	p.wakeScheduler(time.Time{})
	require.Len(t, p.wake, 0, "a second commit in the streak does not wake it")
}

// TestExpiryStepRetriesWithinASecond: the expiry step's transaction is
// retried inside the store, but never more than 1 s apart (the store's
// own backoff, set to an hour here, would wait that long), and commits once
// the database is back; its retries are counted as any transaction's.
func TestExpiryStepRetriesWithinASecond(t *testing.T) {
	schema := testdb.NewSchema(t)
	url, proxy := testdb.Proxied(t, schema.URL)
	retries := make(chan time.Duration, 100)
	st := testdb.Schema{Name: schema.Name, URL: url}.Open(t, store.Config{RetryBase: time.Hour, RetryMax: time.Hour,
		OnRetry: func(_ int, _ error, delay time.Duration) { retries <- delay }})
	require.NoError(t, st.Migrate(context.Background()))
	w := &Worker{cfg: Config{Store: st, Group: "g", Names: topics.DefaultNames()}, log: zerolog.Nop()}
	p := &partition{w: w, id: 3, wake: make(chan struct{}, 1)}
	proxy.Cut()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := p.expireDue(ctx); done <- err }()
	for range 2 {
		require.LessOrEqual(t, <-retries, maxExpirySleep)
	}
	proxy.Restore()
	require.NoError(t, <-done)
}
