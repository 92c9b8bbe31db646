package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// ExpireDue is the expiry step of one partition, run by its scheduler: it ends
// the sessions watched by this batch's partition that are past their expiry
// (session.go), the leases it watches that are past expires_at
// (lock.expired, next waiter granted), answers its waiters past their
// deadline with LOCK_TIMEOUT and ends the lock-delays of its locks that
// have passed (the waiters granted). It takes at most MaxSweep of each
// (see MaxSweep for what they may cause) and leaves the rest to the next
// step, which its scheduler runs at once. It returns how many sessions,
// leases and waiters it ended, and the events it caused (for metrics; the
// outbox has them already).
func (b *Batch) ExpireDue(ctx context.Context) (int, []topics.Event, error) {
	a := &applier{Batch: b}
	p := b.env.Partition
	sessions, err := a.endDueSessions(ctx)
	if err != nil {
		return 0, nil, err
	}
	names, _, _, err := a.sweep(ctx, sweepFilter{partition: &p, limit: MaxSweep})
	if err != nil {
		return 0, nil, err
	}
	n := sessions + len(names)
	// The oldest deadlines and delays first, so that lock_waiters_deadline
	// and locks_delay_by_partition serve the generic plan;
	// statement_timestamp(), unlike clock_timestamp(), can bound an index
	// scan; what falls due during the statement waits for the next tick.
	// The locks are then taken in key order, skipping those another
	// transaction holds (its change or the next step settles them): this
	// step holds the ended sessions' locks already, taken in an order of
	// their own, so waiting here could deadlock with a transaction that
	// takes locks in key order (a session's close, another partition's
	// scheduler). They are written under this partition, the one whose
	// waiters or lock-delays fell due (ownPartition).
	rows, err := b.tx.Query(ctx, `
		SELECT DISTINCT namespace, lock_name FROM (
			(SELECT namespace, lock_name FROM lock_waiters
			WHERE source_partition = $1 AND deadline <= statement_timestamp()
			ORDER BY deadline LIMIT $2)
			UNION ALL
			(SELECT namespace, lock_name FROM locks
			WHERE source_partition = $1 AND delay_until <= statement_timestamp()
			ORDER BY delay_until LIMIT $2)) w
		ORDER BY 1, 2`, p, MaxSweep)
	if err != nil {
		return 0, nil, fmt.Errorf("finding timed-out waiters and lock-delays: %w", err)
	}
	var locks []lockKey
	var k lockKey
	if _, err := pgx.ForEachRow(rows, []any{&k.ns, &k.name}, func() error { locks = append(locks, k); return nil }); err != nil {
		return 0, nil, fmt.Errorf("finding timed-out waiters and lock-delays: %w", err)
	}
	before := len(a.caused)
	err = a.settleLocks(ctx, locks, nil, lockRowSkipSQL, ownPartition,
		func(_ lockKey, s *lockState) []rules.Effect { return s.l.Expire() })
	if err != nil {
		return 0, nil, fmt.Errorf("timing out waiters and ending lock-delays: %w", err)
	}
	n += len(a.caused) - before
	return n, a.caused, nil
}

// lockKey names a lock.
type lockKey struct{ ns, name string }

// Due is when a partition next has a session, a lease, a waiter or a
// lock-delay to end (At) and how long that is from now by the database's
// clock (In: negative when overdue; at most maxDueIn either way); OK false
// when it has none.
type Due struct {
	At time.Time
	In time.Duration
	OK bool
}

// NextDues is the Due of each of partitions, in their order, in one
// statement: the expiry schedulers of many partitions cost one query. It
// reads only the indexes by partition and time.
func NextDues(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, partitions []int32) ([]Due, error) {
	rows, err := q.Query(ctx, `SELECT d.due, extract(epoch FROM d.due - clock_timestamp())::float8
		FROM unnest($1::int[]) WITH ORDINALITY AS p(id, n), LATERAL (SELECT least(
		(SELECT min(expires_at) FROM lock_holders WHERE source_partition = p.id),
		(SELECT min(deadline) FROM lock_waiters WHERE source_partition = p.id),
		(SELECT min(expires_at) FROM sessions WHERE source_partition = p.id),
		(SELECT min(delay_until) FROM locks WHERE source_partition = p.id AND delay_until IS NOT NULL)) AS due) d
		ORDER BY p.n`, partitions)
	if err != nil {
		return nil, err
	}
	dues := make([]Due, 0, len(partitions))
	var t *time.Time
	var secs *float64
	_, err = pgx.ForEachRow(rows, []any{&t, &secs}, func() error {
		if t == nil {
			dues = append(dues, Due{})
			return nil
		}
		// Clamped first: extends can push expires_at past a Duration's 292 years (a negative wait).
		in := time.Duration(max(-maxDueIn.Seconds(), min(*secs, maxDueIn.Seconds())) * float64(time.Second))
		dues = append(dues, Due{At: *t, In: in, OK: true})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return dues, nil
}

// maxDueIn bounds a Due's In either way, far beyond any sleep of its callers.
const maxDueIn = 100 * 365 * 24 * time.Hour
