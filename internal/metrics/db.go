package metrics

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/omninode/lockworker/outbox"
)

// LockStats describes the whole database (every worker's locks), by the
// database clock.
type LockStats struct {
	// HeldLocks are leases in force: one per holder (a shared lock or a
	// semaphore may have several). A lease of a session has no expiry of
	// its own: it is in force while its session is not past its expiry.
	HeldLocks int64 `json:"held_locks"`
	// HeldShared are the shared (read) ones among them.
	HeldShared int64 `json:"held_shared"`
	// LeasesOverdue are past their expiry (a session's lease: its
	// session's) but were not ended yet: the expiry scheduler ends each
	// within a second, so a number that stays up means a partition's
	// scheduler is stuck or its partition has no owner, or (with no
	// session overdue) leases of a session whose row is gone, which no
	// scheduler ends (only a hand edit of the database leaves them: a
	// session's end deletes its row and leases together; README,
	// "Leases overdue").
	LeasesOverdue int64 `json:"leases_overdue"`
	// Waiters are queued acquires.
	Waiters int64 `json:"waiters"`
	// Sessions are the open sessions: not past their expiry.
	Sessions int64 `json:"sessions"`
	// SessionsOverdue are past their expiry but were not ended yet (the
	// same scheduler ends them, their leases and waits with them).
	SessionsOverdue int64 `json:"sessions_overdue"`
	// OutboxBacklog are events committed but not yet acknowledged by Kafka
	// (plus, for up to outbox.Config.DeleteDelay, 100 ms, acknowledged ones
	// waiting for the relay's next query to delete them); OutboxParked of
	// them are parked: refused for good by Kafka, or of a topic that failed
	// RELAY_MAX_ATTEMPTS times.
	OutboxBacklog int64 `json:"outbox_backlog"`
	OutboxParked  int64 `json:"outbox_parked"`
	// OldestUnpublishedSeconds is the age of the oldest of them not parked
	// (0 when none): a row parked for good would hold it up forever.
	OldestUnpublishedSeconds float64 `json:"oldest_unpublished_age_seconds"`
	// CountedAt is when the read that counted them began, by this
	// process's clock, in UTC to the millisecond: set by the cached read
	// (Metrics.LockStats), whose numbers answer for up to statsMaxAge, so
	// that a reader can tell an old read from a new one. The ages above
	// are as of then.
	CountedAt time.Time `json:"counted_at,omitzero"`
	// started is CountedAt as read, with its monotonic reading (Age).
	started time.Time
}

// Age is how long ago the read that counted them began, by the monotonic
// clock where the reading has one, so that a step of the wall clock does
// not make a cached read look older or newer than it is.
func (s LockStats) Age() time.Duration { return time.Since(s.started) }

// readLockStats counts leases (a shared lock or a semaphore has one per
// holder), waiters, sessions and the outbox. The counts scan their
// (normally small) tables, so bound ctx.
//
// A lease ends when the handlers' holderCols say: at its expires_at, or a
// session's (expires_at NULL) at its session's, or at once when its
// session's row is gone. The join is a hash of sessions, one more scan of
// that small table. Every count takes the statement's instant, so that a
// lease is held or overdue, never both.
func readLockStats(ctx context.Context, pool *pgxpool.Pool) (LockStats, error) {
	var s LockStats
	err := pool.QueryRow(ctx, `
		SELECT count(*) FILTER (WHERE ends > statement_timestamp()),
		       count(*) FILTER (WHERE ends > statement_timestamp() AND mode = 'shared'),
		       count(*) FILTER (WHERE ends <= statement_timestamp()),
		       (SELECT count(*) FROM lock_waiters),
		       (SELECT count(*) FILTER (WHERE expires_at > statement_timestamp()) FROM sessions),
		       (SELECT count(*) FILTER (WHERE expires_at <= statement_timestamp()) FROM sessions)
		FROM (SELECT h.mode, coalesce(h.expires_at, s.expires_at, h.acquired_at) AS ends
		      FROM lock_holders h LEFT JOIN sessions s ON s.id = h.session_id) l`).
		Scan(&s.HeldLocks, &s.HeldShared, &s.LeasesOverdue, &s.Waiters, &s.Sessions, &s.SessionsOverdue)
	if err != nil {
		return LockStats{}, fmt.Errorf("counting held locks, waiters and sessions: %w", err)
	}
	var oldest time.Duration
	if s.OutboxBacklog, s.OutboxParked, oldest, err = outbox.Backlog(ctx, pool); err != nil {
		return LockStats{}, err
	}
	s.OldestUnpublishedSeconds = oldest.Seconds()
	return s, nil
}

// statsMaxAge is how long one read of LockStats answers scrapes and
// /health/locks (Metrics.LockStats): the read
// counts whole tables (100,000 leases, half of them in sessions, 50,000
// waiters and 20,000 sessions: about 40 ms and 3,100 buffers), so more
// scrapers, or a shorter scrape interval, must not read more often.
const statsMaxAge = 10 * time.Second

// statsFailedAge is how long a failed read of LockStats answers them, from
// its end: a read that keeps failing (one that outlasts its 2 s counting a
// huge outbox, a PostgreSQL that does not answer) is not started again by
// every scrape and request on the open port back to back, each holding a
// connection and scanning the tables until its bound. A scrape meanwhile
// misses the gauges, as the failed read's did; the first after it reads
// again (a successful read before it was statsMaxAge old answers first).
const statsFailedAge = 5 * time.Second

// dbCollector reports LockStats read at most once per statsMaxAge, or
// statsFailedAge after a failed read. Concurrent scrapes (an HA pair of
// Prometheus servers) and /health/locks requests share one read: one
// arriving while it is under way waits for its result, failure included,
// so they never hold more than one connection between them.
type dbCollector struct {
	read    func(context.Context) (LockStats, error)
	timeout time.Duration
	now     func() time.Time // for tests

	flight   singleflight.Group
	mu       sync.Mutex // guards the fields below
	stats    LockStats
	readAt   time.Time // when the last successful read began; zero: none
	failed   error     // the last read's error; nil when it succeeded
	failedAt time.Time // when that failed read ended
}

func newDBCollector(read func(context.Context) (LockStats, error), timeout time.Duration) *dbCollector {
	return &dbCollector{read: read, timeout: timeout, now: time.Now}
}

// lockStats returns the last successful read while it is younger than
// statsMaxAge, else the last read's failure until statsFailedAge after it
// ended, else joins the read under way or starts one, waiting for it
// until ctx ends. The read is bounded by c.timeout, not by ctx: a caller
// that stops waiting leaves it to the others, and to the cache.
func (c *dbCollector) lockStats(ctx context.Context) (LockStats, error) {
	c.mu.Lock()
	now := c.now()
	if !c.readAt.IsZero() && now.Sub(c.readAt) < statsMaxAge {
		defer c.mu.Unlock()
		return c.stats, nil
	}
	if c.failed != nil && now.Sub(c.failedAt) < statsFailedAge {
		defer c.mu.Unlock()
		return LockStats{}, fmt.Errorf("the last read of the lock statistics failed %s ago (read again %s after a failure): %w",
			now.Sub(c.failedAt).Round(time.Millisecond), statsFailedAge, c.failed)
	}
	c.mu.Unlock()
	ch := c.flight.DoChan("stats", func() (any, error) {
		start := c.now()
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		defer cancel()
		s, err := c.read(ctx)
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.failed, c.failedAt = err, c.now()
			return nil, err
		}
		s.CountedAt, s.started = start.UTC().Truncate(time.Millisecond), start
		c.stats, c.readAt, c.failed = s, start, nil
		return s, nil
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return LockStats{}, r.Err
		}
		return r.Val.(LockStats), nil
	case <-ctx.Done():
		return LockStats{}, fmt.Errorf("waiting for the read of the lock statistics under way: %w", ctx.Err())
	}
}

var (
	heldDesc     = prometheus.NewDesc(Namespace+"_locks_held", "Leases in force, one per holder (whole database).", nil, nil)
	byModeDesc   = prometheus.NewDesc(Namespace+"_locks_held_by_mode", "Leases in force by mode: shared (read locks) or exclusive (mutexes, writers, semaphore holders) (whole database).", []string{"mode"}, nil)
	overdueDesc  = prometheus.NewDesc(Namespace+"_leases_overdue", "Leases past their expiry (a session's lease: its session's) not ended yet (whole database); the scheduler ends each within 1 s.", nil, nil)
	waitersDesc  = prometheus.NewDesc(Namespace+"_lock_waiters", "Queued acquires (whole database).", nil, nil)
	sessionsDesc = prometheus.NewDesc(Namespace+"_sessions", "Open sessions: not past their expiry (whole database).", nil, nil)
	sessOverDesc = prometheus.NewDesc(Namespace+"_sessions_overdue", "Sessions past their expiry not ended yet (whole database); the scheduler ends each within 1 s.", nil, nil)
	backlogDesc  = prometheus.NewDesc(Namespace+"_outbox_backlog", "Outbox rows not yet acknowledged by Kafka, and acknowledged ones up to 100 ms before their deletion (whole database).", nil, nil)
	parkedDesc   = prometheus.NewDesc(Namespace+"_outbox_parked", "Outbox rows parked: refused for good by Kafka, or of a topic that failed RELAY_MAX_ATTEMPTS times (whole database).", nil, nil)
	oldestDesc   = prometheus.NewDesc(Namespace+"_outbox_oldest_age_seconds", "Age of the oldest outbox row not parked (whole database; 0 when none): parked rows count in lockworker_outbox_parked instead.", nil, nil)
	dbStatsDescs = []*prometheus.Desc{heldDesc, byModeDesc, overdueDesc, waitersDesc, sessionsDesc, sessOverDesc, backlogDesc, parkedDesc, oldestDesc}
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range dbStatsDescs {
		ch <- d
	}
}

// Collect reports an invalid metric when the database does not answer in
// time: the gauges are then absent from the scrape, not stale.
func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	s, err := c.lockStats(context.Background()) // the read's own timeout bounds it
	if err != nil {
		ch <- prometheus.NewInvalidMetric(heldDesc, err)
		return
	}
	for _, g := range []struct {
		d *prometheus.Desc
		v float64
	}{
		{heldDesc, float64(s.HeldLocks)}, {overdueDesc, float64(s.LeasesOverdue)}, {waitersDesc, float64(s.Waiters)},
		{sessionsDesc, float64(s.Sessions)}, {sessOverDesc, float64(s.SessionsOverdue)},
		{backlogDesc, float64(s.OutboxBacklog)}, {parkedDesc, float64(s.OutboxParked)}, {oldestDesc, s.OldestUnpublishedSeconds},
	} {
		ch <- prometheus.MustNewConstMetric(g.d, prometheus.GaugeValue, g.v)
	}
	ch <- prometheus.MustNewConstMetric(byModeDesc, prometheus.GaugeValue, float64(s.HeldShared), "shared")
	ch <- prometheus.MustNewConstMetric(byModeDesc, prometheus.GaugeValue, float64(s.HeldLocks-s.HeldShared), "exclusive")
}
