package metrics

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// concurrently collects c twice at once and returns how many metrics each
// collection sent.
func concurrently(c prometheus.Collector) [2]int {
	var got [2]int
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() {
			ch := make(chan prometheus.Metric, 100)
			c.Collect(ch)
			close(ch)
			for range ch {
				got[i]++
			}
		})
	}
	wg.Wait()
	return got
}

// slowRead is a read that waits for a second caller (what a read per
// scrape would bring) or a second, whichever comes first, and counts its
// calls: shared, the second scrape joins the first read and the count
// stays 1.
func slowRead[T any](calls *atomic.Int32, v T, err error) func(context.Context) (T, error) {
	second := make(chan struct{})
	return func(context.Context) (T, error) {
		if calls.Add(1) == 2 {
			close(second)
		}
		select {
		case <-second:
		case <-time.After(time.Second):
		}
		return v, err
	}
}

// TestConcurrentScrapesShareTheReads: two scrapes at once (an HA pair of
// Prometheus servers) make one read of the consumer lag and one of the
// database gauges, and both get the values; a failed read is shared too,
// not repeated by the scrape that waited for it.
func TestConcurrentScrapesShareTheReads(t *testing.T) {
	var lagCalls atomic.Int32
	lag := &partitionCollector{desc: lagDesc, read: slowRead(&lagCalls, map[int32]int64{0: 1, 1: 2}, nil), timeout: time.Second}
	require.Equal(t, [2]int{2, 2}, concurrently(lag))
	require.EqualValues(t, 1, lagCalls.Load())

	var dbCalls atomic.Int32
	db := &dbCollector{read: slowRead(&dbCalls, LockStats{HeldLocks: 3}, nil), timeout: time.Second, now: time.Now}
	require.Equal(t, [2]int{10, 10}, concurrently(db))
	require.EqualValues(t, 1, dbCalls.Load())

	var failed atomic.Int32
	db = &dbCollector{read: slowRead(&failed, LockStats{}, errors.New("down")), timeout: time.Second, now: time.Now}
	require.Equal(t, [2]int{1, 1}, concurrently(db), "one invalid metric each")
	require.EqualValues(t, 1, failed.Load())
}

// TestLockStatsWaitsUntilItsContextEnds: /health/locks joins the read the
// scrapes share and stops waiting for it at its own deadline; the read goes
// on, and its result answers the next caller from the cache.
func TestLockStatsWaitsUntilItsContextEnds(t *testing.T) {
	release := make(chan struct{})
	var calls atomic.Int32
	c := &dbCollector{read: func(context.Context) (LockStats, error) {
		calls.Add(1)
		<-release
		return LockStats{HeldLocks: 7}, nil
	}, timeout: time.Minute, now: time.Now}
	m := &Metrics{db: c}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := m.LockStats(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, "waiting for the read of the lock statistics under way")

	close(release)
	require.Eventually(t, func() bool {
		s, err := m.LockStats(context.Background())
		return err == nil && s.HeldLocks == 7
	}, 5*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, calls.Load(), "the read given up on is the one that answers")

	_, err = New(Config{}).LockStats(context.Background())
	require.ErrorContains(t, err, "Config.Pool is not set")
}

// TestScrapeReadsTakeHold: the database gauges' read runs inside
// Config.Hold (the HTTP side's slots of the pool), and so does the
// consumer lag's read of PostgreSQL, which its lag runs through the Hold
// it is given, but not the rest of the lag (its Kafka round trips); a
// read Hold does not let run is not made: its gauges are missing.
func TestScrapeReadsTakeHold(t *testing.T) {
	st := testdb.New(t)
	type heldKey struct{} // marks a read's context inside Hold
	var holds atomic.Int32
	m := New(Config{Pool: st.Pool, Hold: func(ctx context.Context, read func(context.Context) error) error {
		holds.Add(1)
		return read(context.WithValue(ctx, heldKey{}, true))
	}})
	var outside, inside atomic.Bool // in a slot, as the lag saw it
	m.WatchLag(func(ctx context.Context, hold func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
		outside.Store(ctx.Value(heldKey{}) != nil)
		err := hold(ctx, func(ctx context.Context) error { inside.Store(ctx.Value(heldKey{}) != nil); return nil })
		return map[int32]int64{0: 1}, err
	})
	_, err := m.Registry.Gather()
	require.NoError(t, err)
	require.EqualValues(t, 2, holds.Load(), "the gauges' read and the lag's read of PostgreSQL")
	require.False(t, outside.Load(), "the lag's Kafka part holds no slot")
	require.True(t, inside.Load(), "its read of PostgreSQL does")

	m = New(Config{Pool: st.Pool, Hold: func(context.Context, func(context.Context) error) error { return errors.New("no slot") }})
	m.WatchLag(func(ctx context.Context, hold func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
		return nil, hold(ctx, func(context.Context) error {
			t.Error("the lag's read of PostgreSQL without a slot")
			return nil
		})
	})
	_, err = m.Registry.Gather()
	require.ErrorContains(t, err, "no slot")
	absent(t, m, "lockworker_locks_held")
	absent(t, m, "lockworker_consumer_lag")
}
