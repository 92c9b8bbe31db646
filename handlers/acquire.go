package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// acquire grants a free lock, renews it for its holder, or refuses or queues
// the command when another owner holds it.
func (a *applier) acquire(ctx context.Context) error {
	c := a.cmd
	lease := a.lease()
	g := grantee{
		owner: c.OwnerID, requestID: c.RequestID, replyTo: c.ReplyTo, lease: lease,
		metadata: metadata(c.OwnerMetadata), partition: a.env.Partition, polledAt: a.polledAt,
	}
	if r, err := a.atOnce(ctx); err != nil || r != nil {
		if r != nil {
			r.now = *r.acquiredAt // the grant's own time, as the general path's events have
			p := a.granted(r, g)
			a.reply(p)
			a.emit(a.env.Names.Acquired, c.Key(), p)
		}
		return err
	}
	// Create the row if missing and lock it, in one statement: racing
	// acquirers of a new lock all wait here for the first one's commit.
	r, err := scanLock(a.tx.QueryRow(ctx, `
		INSERT INTO locks AS l (namespace, lock_name, status, source_partition) VALUES ($1, $2, 'free', $3)
		ON CONFLICT (namespace, lock_name) DO UPDATE SET status = l.status
		RETURNING `+lockCols, c.Namespace, c.LockName, a.env.Partition))
	if err != nil {
		return fmt.Errorf("locking row: %w", err)
	}
	if _, err := a.settle(ctx, r); err != nil {
		return err
	}
	switch {
	case !r.held():
		p, err := a.grant(ctx, r, g)
		if err != nil {
			return err
		}
		a.reply(p)
		a.emit(a.env.Names.Acquired, c.Key(), p)
		return nil
	case r.owner == c.OwnerID:
		return a.renew(ctx, r, lease)
	case c.WaitTimeout == 0:
		a.reject(topics.CodeLockHeld, fmt.Sprintf("lock %q is held by %q", c.Key(), r.owner), r)
		return nil
	default:
		return a.enqueue(ctx, r, lease)
	}
}

// lease is the acquire's lease_duration, or the default.
func (a *applier) lease() float64 {
	if a.cmd.LeaseDuration == 0 {
		return a.env.DefaultLease.Seconds()
	}
	return a.cmd.LeaseDuration
}

// renew answers an acquire by the holder itself: same token, and the lease
// runs to now + lease_duration if that is later than it ran before.
func (a *applier) renew(ctx context.Context, r *lockRow, lease float64) error {
	c := a.cmd
	err := a.tx.QueryRow(ctx, `
		UPDATE locks SET expires_at = greatest(expires_at, $3::timestamptz + make_interval(secs => $4::float8)),
			reply_to = coalesce(nullif($5, ''), reply_to), updated_at = $3::timestamptz
		WHERE namespace = $1 AND lock_name = $2 RETURNING expires_at`,
		r.namespace, r.name, r.now, lease, c.ReplyTo).Scan(&r.expiresAt)
	if err != nil {
		return fmt.Errorf("renewing lease: %w", err)
	}
	a.reply(a.event(topics.TypeAcquired, r))
	return nil
}

// enqueue puts the command at the end of the lock's FIFO queue, or reports the
// place it already has when its owner is waiting.
func (a *applier) enqueue(ctx context.Context, r *lockRow, lease float64) error {
	c := a.cmd
	if r.waiters > 0 {
		// The owner may be asking again, with a new request_id, while it is
		// in the queue. If its wait ended, it is answered LOCK_TIMEOUT first,
		// as the scheduler would have (with every other ended wait), and the
		// new request queues anew. If not, the new request takes its place.
		if err := a.takeWaiters(ctx, r, false); err != nil {
			return err
		}
		if replaced, err := a.requeue(ctx, r, lease); replaced || err != nil {
			return err
		}
	}
	var position int
	err := a.tx.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, owner_metadata, reply_to, deadline, source_partition)
			VALUES ($1, $2, $3, $4, $5, $6, nullif($7, ''), $8::timestamptz + make_interval(secs => $9::float8), $10)
			ON CONFLICT (namespace, lock_name, owner_id) DO NOTHING
			RETURNING id),
		bump AS (
			UPDATE locks SET waiter_count = waiter_count + 1 WHERE namespace = $1 AND lock_name = $2 AND EXISTS (SELECT FROM ins))
		-- The statement's snapshot does not see the row ins adds: count it apart.
		SELECT (SELECT count(*) FROM ins) + count(*) FROM lock_waiters
		WHERE namespace = $1 AND lock_name = $2
			AND id <= coalesce((SELECT id FROM ins), (SELECT id FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND owner_id = $3))`,
		r.namespace, r.name, c.OwnerID, c.RequestID, lease, metadata(c.OwnerMetadata), c.ReplyTo, r.now, c.WaitTimeout, a.env.Partition,
	).Scan(&position)
	if err != nil {
		return fmt.Errorf("queueing %q: %w", c.OwnerID, err)
	}
	p := a.event(topics.TypeQueued, r)
	p.ev.QueuePosition = position
	a.reply(p)
	return nil
}

// requeue gives the command's owner's place in the queue, if it has one, to
// the command: the acquire that held it is answered lock.withdrawn (to its
// own reply_to, as its final answer) and the command lock.queued.
func (a *applier) requeue(ctx context.Context, r *lockRow, lease float64) (bool, error) {
	c := a.cmd
	var prevID, prevReplyTo string
	var position int
	err := a.tx.QueryRow(ctx, `
		UPDATE lock_waiters w SET request_id = $4, lease_duration = $5, owner_metadata = $6, reply_to = nullif($7, ''),
			deadline = $8::timestamptz + make_interval(secs => $9::float8), source_partition = $10
		FROM lock_waiters prev
		WHERE prev.id = w.id AND w.namespace = $1 AND w.lock_name = $2 AND w.owner_id = $3
		RETURNING prev.request_id, coalesce(prev.reply_to, ''),
			(SELECT count(*) FROM lock_waiters q WHERE q.namespace = $1 AND q.lock_name = $2 AND q.id <= w.id)`,
		r.namespace, r.name, c.OwnerID, c.RequestID, lease, metadata(c.OwnerMetadata), c.ReplyTo, r.now, c.WaitTimeout, a.env.Partition,
	).Scan(&prevID, &prevReplyTo, &position)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("requeueing %q: %w", c.OwnerID, err)
	}
	ev := topics.NewEvent(topics.TypeWithdrawn, topics.OpAcquire, prevID, r.now)
	ev.LockInfo = r.info()
	prev := &pending{ev: &ev}
	a.emit(prevReplyTo, c.Key(), prev)
	a.remember(prevID, prevReplyTo, prev)
	a.caused = append(a.caused, ev)

	p := a.event(topics.TypeQueued, r)
	p.ev.QueuePosition = position
	a.reply(p)
	return true, nil
}

// metadata stores an absent or null owner_metadata as SQL NULL.
func metadata(m []byte) []byte {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return m
}
