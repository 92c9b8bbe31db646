package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// release ends the holder's lease and grants the next waiter, or withdraws an
// owner that is still waiting.
func (a *applier) release(ctx context.Context) error {
	c := a.cmd
	if r, err := a.atOnce(ctx); err != nil || r != nil {
		if r != nil {
			a.released(r)
		}
		return err
	}
	r, err := a.lockForUpdate(ctx, c.Namespace, c.LockName)
	if err != nil {
		return err
	}
	// An owner still waiting leaves the queue before an ended lease is
	// settled: settling must not grant the lock to the owner giving it up.
	if r.waiters > 0 && r.owner != c.OwnerID {
		withdrawn, err := a.withdraw(ctx, r)
		if err != nil {
			return err
		}
		if withdrawn {
			_, err := a.settle(ctx, r)
			return err
		}
	}
	endedOwner, err := a.settle(ctx, r)
	if err != nil {
		return err
	}
	switch {
	case r.held() && r.owner == c.OwnerID:
		if c.FencingToken != nil && *c.FencingToken != r.token {
			a.reject(topics.CodeTokenMismatch, fmt.Sprintf("fencing_token %d is not the holder's", *c.FencingToken), r)
			return nil
		}
		if _, err := a.tx.Exec(ctx, `UPDATE locks SET status = 'released', updated_at = $3 WHERE namespace = $1 AND lock_name = $2`,
			r.namespace, r.name, r.now); err != nil {
			return fmt.Errorf("releasing: %w", err)
		}
		r.status = topics.StatusReleased
		a.released(r)
		return a.grantNext(ctx, r)
	case endedOwner == c.OwnerID:
		a.reject(topics.CodeNotHeld, "the lease had already expired", r)
		return nil
	}
	if r.held() {
		a.reject(topics.CodeNotOwner, fmt.Sprintf("lock %q is held by another owner", c.Key()), r)
	} else {
		a.reject(topics.CodeNotHeld, fmt.Sprintf("lock %q is not held", c.Key()), r)
	}
	return nil
}

// released answers the release of r, just marked released. A holder
// released from another reply_to is told on its own.
func (a *applier) released(r *lockRow) {
	p := a.event(topics.TypeReleased, r)
	a.reply(p)
	if r.replyTo != a.cmd.ReplyTo {
		a.emit(r.replyTo, a.cmd.Key(), p)
	}
	a.emit(a.env.Names.Released, a.cmd.Key(), p)
	a.recordHistory(p.ev)
}

// withdraw takes the command's owner out of the queue, if it waits there.
// The release and the waiting acquire are each answered lock.withdrawn; the
// acquire's is its stored outcome, so a retry of it does not queue again.
func (a *applier) withdraw(ctx context.Context, r *lockRow) (bool, error) {
	var requestID, replyTo string
	err := a.tx.QueryRow(ctx, `
		WITH w AS (DELETE FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND owner_id = $3 RETURNING request_id, reply_to),
		n AS (UPDATE locks SET waiter_count = waiter_count - 1 WHERE namespace = $1 AND lock_name = $2 AND EXISTS (SELECT FROM w))
		SELECT request_id, coalesce(reply_to, '') FROM w`, r.namespace, r.name, a.cmd.OwnerID).Scan(&requestID, &replyTo)
	if err != nil {
		if errors.Is(err, pgx.ErrNoRows) {
			return false, nil
		}
		return false, fmt.Errorf("withdrawing %q: %w", a.cmd.OwnerID, err)
	}
	r.waiters--
	a.reply(a.event(topics.TypeWithdrawn, r))
	// The waiting acquire gets its own final answer, as when an acquire
	// takes its place (requeue): the process waiting on it may not be the
	// one that sent the release.
	ev := topics.NewEvent(topics.TypeWithdrawn, topics.OpAcquire, requestID, r.now)
	ev.LockInfo = r.info()
	p := &pending{ev: &ev}
	a.emit(replyTo, a.cmd.Key(), p)
	a.remember(requestID, replyTo, p)
	a.caused = append(a.caused, ev)
	return true, nil
}
