package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/omninode/lockworker/topics"
)

// grantee is who a lock is being granted to: the acquiring command, or a
// waiter whose turn came.
type grantee struct {
	owner, requestID, replyTo string
	lease                     float64
	metadata                  []byte
	partition                 int32
	polledAt                  time.Time
}

// waiter is a lock_waiters row taken off the queue.
type waiter struct {
	grantee
	id       int64
	timedOut bool
}

// grantNext takes the waiters of a free lock off the queue in FIFO order:
// those past their deadline get LOCK_TIMEOUT, the first live one is granted.
// One statement does both; none when nobody waits.
func (a *applier) grantNext(ctx context.Context, r *lockRow) error {
	if r.waiters == 0 {
		return nil
	}
	return a.takeWaiters(ctx, r, true)
}

// takeWaiters answers the waiters past their deadline with LOCK_TIMEOUT and,
// when grant is true, grants the lock to the first live waiter.
func (a *applier) takeWaiters(ctx context.Context, r *lockRow, grant bool) error {
	rows, err := a.tx.Query(ctx, `
		WITH timed_out AS (
			DELETE FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND deadline <= $3::timestamptz
			RETURNING id, owner_id, request_id, coalesce(reply_to, ''), lease_duration, owner_metadata, source_partition, true),
		next AS (
			DELETE FROM lock_waiters WHERE $4 AND id = (
				SELECT id FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND deadline > $3::timestamptz ORDER BY id LIMIT 1)
			RETURNING id, owner_id, request_id, coalesce(reply_to, ''), lease_duration, owner_metadata, source_partition, false)
		SELECT * FROM timed_out UNION ALL SELECT * FROM next ORDER BY 1`, r.namespace, r.name, r.now, grant)
	if err != nil {
		return fmt.Errorf("taking waiters: %w", err)
	}
	var ws []waiter
	for rows.Next() {
		var w waiter
		if err := rows.Scan(&w.id, &w.owner, &w.requestID, &w.replyTo, &w.lease, &w.metadata, &w.partition, &w.timedOut); err != nil {
			rows.Close()
			return fmt.Errorf("taking waiters: %w", err)
		}
		ws = append(ws, w)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("taking waiters: %w", err)
	}
	if len(ws) == 0 {
		return nil
	}
	var next *waiter
	for i := range ws {
		r.waiters--
		if ws[i].timedOut {
			a.timeout(r, ws[i].grantee)
		} else {
			next = &ws[i]
		}
	}
	if next == nil {
		// Only timed-out waiters were taken: just keep the count true.
		_, err := a.tx.Exec(ctx, `UPDATE locks SET waiter_count = $3 WHERE namespace = $1 AND lock_name = $2`, r.namespace, r.name, r.waiters)
		if err != nil {
			return fmt.Errorf("counting waiters: %w", err)
		}
		return nil
	}
	p, err := a.grant(ctx, r, next.grantee)
	if err != nil {
		return err
	}
	a.notify(p, next.replyTo)
	a.remember(next.requestID, next.replyTo, p)
	return nil
}

// timeout answers a waiter whose deadline passed with LOCK_TIMEOUT, to its
// own reply_to, as the final outcome of its acquire.
func (a *applier) timeout(r *lockRow, w grantee) {
	ev := topics.NewEvent(topics.TypeRejected, topics.OpAcquire, w.requestID, r.now)
	ev.ErrorCode = topics.CodeLockTimeout
	ev.ErrorMessage = "wait_timeout passed before the lock became free"
	ev.LockInfo = r.info()
	p := &pending{ev: &ev}
	a.emit(w.replyTo, topics.LockKey(r.namespace, r.name), p)
	a.remember(w.requestID, w.replyTo, p)
	a.caused = append(a.caused, ev)
}

// grant makes g the holder of r with a new fencing token and returns the
// lock.acquired event (sent by the caller) after recording its history.
// r.waiters must already say how many waiters remain.
func (a *applier) grant(ctx context.Context, r *lockRow, g grantee) (*pending, error) {
	err := a.tx.QueryRow(ctx, `
		UPDATE locks SET status = 'acquired', owner_id = $3, fencing_token = nextval('fencing_tokens'),
			acquired_at = $4::timestamptz, expires_at = $4::timestamptz + make_interval(secs => $5::float8), lease_duration = $5,
			owner_metadata = $6, acquisition_count = acquisition_count + 1, extension_count = 0,
			reply_to = nullif($7, ''), holder_request_id = nullif($8, ''), source_partition = $9,
			waiter_count = $10, updated_at = $4::timestamptz
		WHERE namespace = $1 AND lock_name = $2
		RETURNING fencing_token, acquired_at, expires_at, acquisition_count`,
		r.namespace, r.name, g.owner, r.now, g.lease, g.metadata, g.replyTo, g.requestID, g.partition, r.waiters,
	).Scan(&r.token, &r.acquiredAt, &r.expiresAt, &r.acquisitions)
	if err != nil {
		return nil, fmt.Errorf("granting to %q: %w", g.owner, err)
	}
	r.status, r.owner, r.lease, r.metadata, r.extensions = topics.StatusAcquired, g.owner, g.lease, g.metadata, 0
	r.replyTo, r.holderRequestID = g.replyTo, g.requestID
	return a.granted(r, g), nil
}

// granted records the history of a grant r now shows and returns its
// lock.acquired event.
func (a *applier) granted(r *lockRow, g grantee) *pending {
	ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, g.requestID, r.now)
	ev.LockInfo = r.info()
	p := &pending{ev: &ev, polledAt: g.polledAt}
	a.recordHistory(p.ev)
	return p
}
