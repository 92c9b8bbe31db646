package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

var (
	_ worker.Metrics         = (*Metrics)(nil)
	_ worker.RestartMetrics  = (*Metrics)(nil)
	_ worker.LostMetrics     = (*Metrics)(nil)
	_ worker.WithdrawMetrics = (*Metrics)(nil)
)

// series returns the gathered series of a metric family with exactly these
// labels, failing when absent.
func series(t *testing.T, m *Metrics, name string, labels ...string) *dto.Metric {
	t.Helper()
	fams, _ := m.Registry.Gather() // an error from one collector must not hide the others
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, s := range f.GetMetric() {
			if len(s.GetLabel())*2 != len(labels) {
				continue
			}
			for i, l := range s.GetLabel() {
				if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
					continue next
				}
			}
			return s
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return nil
}

func absent(t *testing.T, m *Metrics, name string) {
	t.Helper()
	fams, _ := m.Registry.Gather()
	for _, f := range fams {
		require.NotEqual(t, name, f.GetName(), "%s should be absent", name)
	}
}

func at(t time.Time) *topics.Time { return topics.NewTimePtr(t) }

func ev(typ, requestID string, occurred time.Time, li *topics.LockInfo) topics.Event {
	e := topics.NewEvent(typ, "", requestID, occurred)
	e.LockInfo = li
	return e
}

// TestEvents: hold and wait times, hand-offs and expiries come from the
// events a command caused, and a duplicate's re-sent answer counts nothing.
func TestEvents(t *testing.T) {
	m := New(Config{})
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	held := &topics.LockInfo{LockName: "job", FencingToken: 1, AcquiredAt: at(t0), ExpiresAt: at(t0.Add(30 * time.Second))}

	m.Events("a1", []topics.Event{ev(topics.TypeAcquired, "a1", t0, held)})
	m.Events("b1", []topics.Event{ev(topics.TypeQueued, "b1", t0.Add(time.Second), held)})
	// a releases after 5 s; b, queued 4 s before, gets the lock.
	granted := &topics.LockInfo{LockName: "job", FencingToken: 2, AcquiredAt: at(t0.Add(5 * time.Second)), ExpiresAt: at(t0.Add(35 * time.Second))}
	release := []topics.Event{ev(topics.TypeReleased, "a2", t0.Add(5*time.Second), held), ev(topics.TypeAcquired, "b1", t0.Add(5*time.Second), granted)}
	m.Events("a2", release)
	m.Events("a2", release[:1]) // a duplicate release is answered with the stored event again

	require.Equal(t, 1.0, series(t, m, "lockworker_handoffs_total").GetCounter().GetValue())
	hold := series(t, m, "lockworker_lock_hold_seconds").GetHistogram()
	require.Equal(t, uint64(1), hold.GetSampleCount())
	require.Equal(t, 5.0, hold.GetSampleSum())
	wait := series(t, m, "lockworker_lock_wait_seconds").GetHistogram()
	require.Equal(t, uint64(1), wait.GetSampleCount())
	require.Equal(t, 4.0, wait.GetSampleSum())

	// c's acquire finds b's lease ended: lock.expired, then c is granted
	// (not a hand-off: c asked now). A waiter that timed out is forgotten.
	m.Events("d1", []topics.Event{ev(topics.TypeQueued, "d1", t0.Add(6*time.Second), granted)})
	timeout := ev(topics.TypeRejected, "d1", t0.Add(40*time.Second), granted)
	timeout.ErrorCode = topics.CodeLockTimeout
	m.Events("c1", []topics.Event{ev(topics.TypeExpired, "", t0.Add(40*time.Second), granted), timeout, ev(topics.TypeAcquired, "c1", t0.Add(40*time.Second), nil)})
	// the scheduler ends c's lease of 10 s and grants the next waiter: a hand-off.
	third := &topics.LockInfo{LockName: "job", FencingToken: 3, AcquiredAt: at(t0.Add(40 * time.Second)), ExpiresAt: at(t0.Add(50 * time.Second))}
	m.Events("", []topics.Event{ev(topics.TypeExpired, "", t0.Add(50*time.Second), third), ev(topics.TypeAcquired, "e1", t0.Add(50*time.Second), nil)})

	require.Equal(t, 1.0, series(t, m, "lockworker_expiries_total", "by", "command").GetCounter().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_expiries_total", "by", "scheduler").GetCounter().GetValue())
	require.Equal(t, 2.0, series(t, m, "lockworker_handoffs_total").GetCounter().GetValue())
	hold = series(t, m, "lockworker_lock_hold_seconds").GetHistogram()
	require.Equal(t, uint64(3), hold.GetSampleCount())
	require.Equal(t, 45.0, hold.GetSampleSum(), "expired leases count until expires_at")
	require.Empty(t, m.events.waiting)
}

// TestRevokedLeasesAreMeasured: a revoke ends leases too, so their holds
// count, each once: the revoker's answer repeats the last holder's event,
// and a duplicate revoke is answered with it again.
func TestRevokedLeasesAreMeasured(t *testing.T) {
	m := New(Config{})
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	first := &topics.LockInfo{LockName: "job", FencingToken: 10, AcquiredAt: at(t0), ExpiresAt: at(t0.Add(time.Hour))}
	second := &topics.LockInfo{LockName: "job", FencingToken: 11, AcquiredAt: at(t0.Add(5 * time.Second)), ExpiresAt: at(t0.Add(time.Hour))}
	revokedAt := t0.Add(20 * time.Second)
	answer := ev(topics.TypeRevoked, "rv", revokedAt, second)
	m.Events("rv", []topics.Event{ev(topics.TypeRevoked, "", revokedAt, first), ev(topics.TypeRevoked, "", revokedAt, second), answer})
	m.Events("rv", []topics.Event{answer})

	hold := series(t, m, "lockworker_lock_hold_seconds").GetHistogram()
	require.Equal(t, uint64(2), hold.GetSampleCount())
	require.Equal(t, 35.0, hold.GetSampleSum(), "acquired_at to the revoke")
}

// TestWithdrawnWaitsAreForgotten: a withdrawn wait leaves the tracker, so
// more than maxTracked of them still leave room to measure the next wait;
// waits beyond maxTracked are counted unmeasured.
func TestWithdrawnWaitsAreForgotten(t *testing.T) {
	m := New(Config{})
	t0 := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	li := &topics.LockInfo{LockName: "job"}
	for i := range maxTracked + 1 {
		id := fmt.Sprintf("w%d", i)
		m.Events(id, []topics.Event{ev(topics.TypeQueued, id, t0, li)})
		m.Events("rel"+id, []topics.Event{ev(topics.TypeWithdrawn, "rel"+id, t0, li), ev(topics.TypeWithdrawn, id, t0, li)})
	}
	m.Events("last", []topics.Event{ev(topics.TypeQueued, "last", t0, li)})
	m.Events("", []topics.Event{ev(topics.TypeAcquired, "last", t0.Add(3*time.Second), li)})
	wait := series(t, m, "lockworker_lock_wait_seconds").GetHistogram()
	require.Equal(t, uint64(1), wait.GetSampleCount())
	require.Equal(t, 3.0, wait.GetSampleSum())
	require.Zero(t, series(t, m, "lockworker_lock_waits_unmeasured_total").GetCounter().GetValue())

	for i := range maxTracked + 1 {
		id := fmt.Sprintf("q%d", i)
		m.Events(id, []topics.Event{ev(topics.TypeQueued, id, t0, li)})
	}
	require.Equal(t, 1.0, series(t, m, "lockworker_lock_waits_unmeasured_total").GetCounter().GetValue())
	// A duplicate of the acquire is answered with its stored lock.queued
	// again: the same wait, counted once, and not measured later either.
	last := fmt.Sprintf("q%d", maxTracked)
	m.Events(last, []topics.Event{ev(topics.TypeQueued, last, t0, li)})
	require.Equal(t, 1.0, series(t, m, "lockworker_lock_waits_unmeasured_total").GetCounter().GetValue())
	m.Events("q0", []topics.Event{ev(topics.TypeAcquired, "q0", t0.Add(time.Second), li)})
	m.Events(last, []topics.Event{ev(topics.TypeQueued, last, t0, li)})
	m.Events("", []topics.Event{ev(topics.TypeAcquired, last, t0.Add(5*time.Second), li)})
	wait = series(t, m, "lockworker_lock_wait_seconds").GetHistogram()
	require.Equal(t, uint64(2), wait.GetSampleCount(), "q0's wait, not q%d's", maxTracked)
	require.Equal(t, 1.0, series(t, m, "lockworker_lock_waits_unmeasured_total").GetCounter().GetValue())
}

// TestDeadWaitsSweptOncePerInterval: a set full of waits is looked
// through for dead ones (older than maxWait: ended on another process) at
// most once every sweepEvery, not at every queued acquire, each look
// walking all maxTracked of them under the appliers' shared mutex.
func TestDeadWaitsSweptOncePerInterval(t *testing.T) {
	m := New(Config{})
	clock := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	m.events.now = func() time.Time { return clock }
	t0 := clock
	li := &topics.LockInfo{LockName: "job"}
	queue := func(id string) {
		m.Events(id, []topics.Event{ev(topics.TypeQueued, id, t0, li)})
	}
	unmeasured := func() float64 {
		return series(t, m, "lockworker_lock_waits_unmeasured_total").GetCounter().GetValue()
	}
	for i := range maxTracked / 2 {
		queue(fmt.Sprintf("old%d", i))
	}
	clock = clock.Add(maxWait - 30*time.Second)
	for i := range maxTracked - maxTracked/2 {
		queue(fmt.Sprintf("young%d", i))
	}
	queue("a") // a look: every wait is younger than maxWait
	require.Equal(t, 1.0, unmeasured())
	clock = clock.Add(31 * time.Second)
	queue("b") // the old half is dead now, but the last look was 31 s ago
	require.Equal(t, 2.0, unmeasured(), "a full set looked through again before sweepEvery")
	clock = clock.Add(sweepEvery - 31*time.Second)
	queue("c") // the next look frees the old half
	require.Equal(t, 2.0, unmeasured())
	m.Events("", []topics.Event{ev(topics.TypeAcquired, "c", t0.Add(2*time.Second), li)})
	wait := series(t, m, "lockworker_lock_wait_seconds").GetHistogram()
	require.Equal(t, uint64(1), wait.GetSampleCount())
	require.Equal(t, 2.0, wait.GetSampleSum())
}

// TestCommandsAndSummary: counters by operation and result, and the
// original node's summary read from them.
func TestCommandsAndSummary(t *testing.T) {
	m := New(Config{})
	require.Equal(t, Summary{SuccessRate: 1}, m.Summary())
	ms := time.Millisecond
	m.Command("acquire", "ok", 10*ms)
	m.Command("acquire", "ok", 20*ms)
	m.Command("acquire", "queued", 30*ms)
	m.Command("acquire", "LOCK_HELD", 40*ms)
	m.Command("release", "ok", 4*ms)
	m.Command("release", "NOT_OWNER", 6*ms)
	m.Command("extend", "ok", ms)
	m.Command("query", "ok", ms)
	m.Command("cleanup", "ok", ms)
	m.Command("drop table", "INVALID_REQUEST", ms) // untrusted text never becomes a label
	m.DeadLettered("INVALID_REQUEST")
	m.Batch(10, 50*ms)
	m.Published(7, 2*time.Second)
	m.Parked("MESSAGE_TOO_LARGE", 1)
	m.Parked("MESSAGE_TOO_LARGE", 2)

	require.Equal(t, 2.0, series(t, m, "lockworker_commands_total", "operation", "acquire", "result", "ok").GetCounter().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_commands_total", "operation", "other", "result", "INVALID_REQUEST").GetCounter().GetValue())
	require.Equal(t, uint64(4), series(t, m, "lockworker_command_duration_seconds", "operation", "acquire").GetHistogram().GetSampleCount())
	require.Equal(t, 1.0, series(t, m, "lockworker_dead_lettered_total", "reason", "INVALID_REQUEST").GetCounter().GetValue())
	require.Equal(t, 10.0, series(t, m, "lockworker_batch_records").GetHistogram().GetSampleSum())
	require.Equal(t, 7.0, series(t, m, "lockworker_outbox_published_total").GetCounter().GetValue())
	require.Equal(t, 2.0, series(t, m, "lockworker_outbox_publish_latency_seconds").GetHistogram().GetSampleSum())
	require.Equal(t, 3.0, series(t, m, "lockworker_outbox_rows_parked_total", "reason", "MESSAGE_TOO_LARGE").GetCounter().GetValue())

	s := m.Summary()
	require.InDelta(t, 25.0, s.AvgAcquireTimeMS, 1e-9)
	require.InDelta(t, 5.0, s.AvgReleaseTimeMS, 1e-9)
	s.AvgAcquireTimeMS, s.AvgReleaseTimeMS = 0, 0
	require.Equal(t, Summary{TotalAcquires: 4, TotalReleases: 2, TotalExtends: 1, TotalQueries: 1, TotalCleanups: 1,
		FailedAcquires: 1, SuccessRate: 0.75}, s)
}

// TestDatabaseGauges: held locks, waiters and the outbox are read at scrape
// time; a database that does not answer leaves them out of the scrape
// instead of failing it. A session's lease is held while its session is
// not past its expiry, and overdue after, as the session is.
func TestDatabaseGauges(t *testing.T) {
	st := testdb.New(t)
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO locks (lock_name, status, holder_count, source_partition, waiter_count) VALUES
			('held', 'acquired', 1, 0, 1), ('overdue', 'acquired', 1, 0, 0), ('gone', 'released', 0, 0, 0), ('read', 'acquired', 2, 0, 0),
			('in-session', 'acquired', 1, 0, 0), ('in-lapsed-session', 'acquired', 2, 0, 0);
		INSERT INTO sessions (id, owner_id, ttl, expires_at, source_partition) VALUES
			('s1', 'c', 10, now() + interval '10 seconds', 0), ('s2', 'd', 10, now() - interval '1 minute', 0);
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition) VALUES
			('', 'held', 'a', 'exclusive', 1, now(), now() + interval '1 hour', 3600, 0),
			('', 'read', 'r1', 'shared', 3, now(), now() + interval '1 hour', 3600, 0),
			('', 'read', 'r2', 'shared', 4, now(), now() + interval '1 hour', 3600, 0),
			('', 'overdue', 'a', 'exclusive', 2, now() - interval '1 hour', now() - interval '1 minute', 3540, 0);
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, lease_duration, session_id, source_partition) VALUES
			('', 'in-session', 'c', 'exclusive', 5, now(), 10, 's1', 0),
			('', 'in-lapsed-session', 'd', 'exclusive', 6, now() - interval '2 minutes', 10, 's2', 0),
			('', 'in-lapsed-session', 'e', 'exclusive', 7, now() - interval '2 minutes', 10, 'ended', 0);
		INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition)
			VALUES ('', 'held', 'b', 'r', 30, now() + interval '1 minute', 0);
		INSERT INTO outbox (source_partition, topic, value, created_at) VALUES (0, 't', 'x', now() - interval '10 seconds');
		INSERT INTO outbox (source_partition, topic, value, parked_until) VALUES (0, 't', 'y', now() + interval '10 minutes');`)
	require.NoError(t, err)
	lag := map[int32]int64{3: 42}
	m := New(Config{Pool: st.Pool})
	m.WatchLag(func(context.Context, func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
		return lag, nil
	})

	gauge := func(name string, labels ...string) float64 {
		return series(t, m, name, labels...).GetGauge().GetValue()
	}
	require.Equal(t, 4.0, gauge("lockworker_locks_held"), "a lease of a session is held while its session is open")
	require.Equal(t, 2.0, gauge("lockworker_locks_held_by_mode", "mode", "shared"))
	require.Equal(t, 2.0, gauge("lockworker_locks_held_by_mode", "mode", "exclusive"))
	require.Equal(t, 1.0, gauge("lockworker_sessions"), "a session past its expiry is not open")
	require.Equal(t, 1.0, gauge("lockworker_sessions_overdue"))
	require.Equal(t, 3.0, gauge("lockworker_leases_overdue"), "a lease of a session past its expiry, or gone, is overdue")
	require.Equal(t, 1.0, gauge("lockworker_lock_waiters"))
	require.Equal(t, 2.0, gauge("lockworker_outbox_backlog"))
	require.Equal(t, 1.0, gauge("lockworker_outbox_parked"))
	require.InDelta(t, 10, gauge("lockworker_outbox_oldest_age_seconds"), 5)
	require.Equal(t, 42.0, gauge("lockworker_consumer_lag", "partition", "3"))

	// With the database gone, m answers its read, younger than statsMaxAge,
	// still; a process whose first read fails leaves the gauges out.
	st.Pool.Close()
	_, err = m.Registry.Gather()
	require.NoError(t, err)
	require.Equal(t, 4.0, gauge("lockworker_locks_held"))
	require.Equal(t, 1.0, gauge("lockworker_lock_waiters"))
	require.Equal(t, 2.0, gauge("lockworker_outbox_backlog"))
	m = New(Config{Pool: st.Pool})
	m.WatchLag(func(context.Context, func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
		return lag, nil
	})
	_, err = m.Registry.Gather()
	require.Error(t, err)
	require.True(t, strings.Contains(err.Error(), "counting held locks"), err.Error())
	absent(t, m, "lockworker_locks_held")
	series(t, m, "lockworker_consumer_lag", "partition", "3")
}

// TestDatabaseGaugesReadOncePerInterval: a failed read is kept for
// statsFailedAge from its end, the scrapes and /health/locks meanwhile
// answer its failure without reading, the first after it reads again; the
// scrapes within statsMaxAge of a successful read answer its numbers
// without reading again; the first scrape after it reads anew.
func TestDatabaseGaugesReadOncePerInterval(t *testing.T) {
	st := testdb.New(t)
	ctx := context.Background()
	hold := func(name string) {
		_, err := st.Pool.Exec(ctx, `INSERT INTO locks (lock_name, status, holder_count, source_partition) VALUES ($1, 'acquired', 1, 0)`, name)
		require.NoError(t, err)
		_, err = st.Pool.Exec(ctx, `
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
				VALUES ('', $1, 'a', 'exclusive', 1, now(), now() + interval '1 hour', 3600, 0)`, name)
		require.NoError(t, err)
	}
	hold("one")

	var reads int
	c := newDBCollector(func(ctx context.Context) (LockStats, error) {
		if reads++; reads == 1 {
			return LockStats{}, errors.New("the database is down")
		}
		return readLockStats(ctx, st.Pool)
	}, 2*time.Second)
	clock := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return clock }
	m := New(Config{})
	m.Registry.MustRegister(c)

	fams, err := m.Registry.Gather()
	require.ErrorContains(t, err, "the database is down")
	for _, f := range fams {
		require.NotEqual(t, "lockworker_locks_held", f.GetName(), "a failed read's gauges are absent")
	}
	require.Equal(t, 1, reads)

	// Kept: neither a scrape nor /health/locks starts the failing read
	// again until statsFailedAge after it ended.
	clock = clock.Add(statsFailedAge - time.Millisecond)
	_, err = m.Registry.Gather()
	require.ErrorContains(t, err, "the database is down")
	require.ErrorContains(t, err, "failed 4.999s ago (read again 5s after a failure)")
	_, err = c.lockStats(ctx)
	require.ErrorContains(t, err, "the database is down")
	require.Equal(t, 1, reads, "a failed read is kept for statsFailedAge")

	clock = clock.Add(time.Millisecond)
	held := func() float64 { return series(t, m, "lockworker_locks_held").GetGauge().GetValue() }
	require.Equal(t, 1.0, held(), "statsFailedAge after the failure, the next scrape reads")
	require.Equal(t, 2, reads)
	read := clock
	clock = clock.Add(time.Second)
	s, err := c.lockStats(ctx)
	require.NoError(t, err)
	require.Equal(t, read, s.CountedAt, "when the cached read began, not when it was asked for")
	clock = read
	hold("two")
	clock = clock.Add(statsMaxAge - time.Millisecond)
	require.Equal(t, 1.0, held(), "within statsMaxAge of the read: its numbers")
	require.Equal(t, 2, reads)
	clock = clock.Add(time.Millisecond)
	require.Equal(t, 2.0, held())
	require.Equal(t, 3, reads)
}

// TestFailedReadAfterAStaleOne: a read that fails once the last successful
// one is statsMaxAge old is kept as any failure (the stale numbers are not
// answered), and the read after it, statsFailedAge later, answers anew.
func TestFailedReadAfterAStaleOne(t *testing.T) {
	var reads int
	fail := false
	c := newDBCollector(func(context.Context) (LockStats, error) {
		reads++
		if fail {
			return LockStats{}, errors.New("timeout: counting")
		}
		return LockStats{HeldLocks: int64(reads)}, nil
	}, time.Second)
	clock := time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	c.now = func() time.Time { return clock }
	ctx := context.Background()
	s, err := c.lockStats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, s.HeldLocks)

	fail = true
	clock = clock.Add(statsMaxAge)
	for range 3 {
		_, err = c.lockStats(ctx)
		require.ErrorContains(t, err, "timeout: counting")
	}
	require.Equal(t, 2, reads, "one failed read, then its failure")

	fail = false
	clock = clock.Add(statsFailedAge)
	s, err = c.lockStats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 3, s.HeldLocks)
}

// The counters the README's alerts take rate() of exist at 0 before their
// first event, so that the first one shows as an increase.
func TestAlertedCountersStartAtZero(t *testing.T) {
	m := New(Config{})
	for name, labels := range map[string][]string{
		"lockworker_dead_lettered_total":      {"reason", "INVALID_REQUEST"},
		"lockworker_outbox_rows_parked_total": {"reason", "MESSAGE_TOO_LARGE"},
		"lockworker_vacuum_runs_total":        {"result", "failed"},
		"lockworker_partition_restarts_total": nil,
	} {
		s := series(t, m, name, labels...)
		require.NotNil(t, s, name)
		require.Zero(t, s.GetCounter().GetValue(), name)
	}
}

// A marker for a batch skipped unread is counted under its own reason,
// which exists at 0 before the first; an unknown reason is "other".
func TestDeadLetteredBatchTooLarge(t *testing.T) {
	m := New(Config{})
	require.Equal(t, worker.DeadLetterBatchTooLarge, reasonBatchTooLarge)
	require.Zero(t, series(t, m, "lockworker_dead_lettered_total", "reason", worker.DeadLetterBatchTooLarge).GetCounter().GetValue())
	m.DeadLettered(worker.DeadLetterBatchTooLarge)
	m.DeadLettered("DROP TABLE")
	require.Equal(t, 1.0, series(t, m, "lockworker_dead_lettered_total", "reason", worker.DeadLetterBatchTooLarge).GetCounter().GetValue())
	require.Equal(t, 1.0, series(t, m, "lockworker_dead_lettered_total", "reason", "other").GetCounter().GetValue())
}
