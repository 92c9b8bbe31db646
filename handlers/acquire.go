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
	lease := c.LeaseDuration
	if lease == 0 {
		lease = a.env.DefaultLease.Seconds()
	}
	g := grantee{
		owner: c.OwnerID, requestID: c.RequestID, replyTo: c.ReplyTo, lease: lease,
		metadata: metadata(c.OwnerMetadata), partition: a.env.Partition, polledAt: a.polledAt,
	}
	if p, err := a.grantAtOnce(ctx, g); err != nil || p != nil {
		if p != nil {
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

// grantAtOnce is the common case in one statement: it creates the lock granted
// to g, or grants a released or expired one nobody waits for, and returns
// the lock.acquired event. It returns nil for every other case (held, a lease
// that ended unannounced, waiters), which the general path decides.
//
// The token and the times are taken when the row is locked: an existing row's
// by the update, after any wait for the row.
func (a *applier) grantAtOnce(ctx context.Context, g grantee) (*pending, error) {
	c := a.cmd
	r, err := scanLock(a.tx.QueryRow(ctx, `
		INSERT INTO locks AS l (namespace, lock_name, status, owner_id, fencing_token, acquired_at, expires_at,
			lease_duration, owner_metadata, acquisition_count, reply_to, holder_request_id, source_partition, updated_at)
		SELECT $1, $2, 'acquired', $3, nextval('fencing_tokens'), t.now, t.now + make_interval(secs => $4::float8),
			$4, $5, 1, nullif($6, ''), nullif($7, ''), $8, t.now
		FROM (SELECT clock_timestamp() AS now) t
		ON CONFLICT (namespace, lock_name) DO UPDATE SET
			status = 'acquired', owner_id = EXCLUDED.owner_id, fencing_token = nextval('fencing_tokens'),
			(acquired_at, expires_at, updated_at) = (SELECT n, n + make_interval(secs => $4::float8), n FROM (SELECT clock_timestamp() AS n) t),
			lease_duration = EXCLUDED.lease_duration, owner_metadata = EXCLUDED.owner_metadata,
			acquisition_count = l.acquisition_count + 1, extension_count = 0, reply_to = EXCLUDED.reply_to,
			holder_request_id = EXCLUDED.holder_request_id, source_partition = EXCLUDED.source_partition
		WHERE l.status IN ('released', 'expired') AND l.waiter_count = 0
		RETURNING `+lockCols, c.Namespace, c.LockName, g.owner, g.lease, g.metadata, g.replyTo, g.requestID, g.partition))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("granting at once: %w", err)
	}
	r.now = *r.acquiredAt // the grant's own time, as the general path's events have
	return a.granted(r, g), nil
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

// metadata stores an absent or null owner_metadata as SQL NULL.
func metadata(m []byte) []byte {
	if len(m) == 0 || string(m) == "null" {
		return nil
	}
	return m
}
