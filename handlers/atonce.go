package handlers

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// The common cases take one statement: an acquire of a lock that is new, or
// released or expired with nobody waiting, and the holder's release of a
// lease in force that nobody waits for. The statement applies only in that
// case and returns the row; otherwise it changes nothing and the general path
// decides. Updating an existing row takes its token and times after the row
// lock, like the general path; creating a row takes them before a possible
// wait on a racing insert of the same lock (which the worker's one
// goroutine per partition makes rare), so such a lease starts a little early.
//
// Each statement also checks that its request_id is new, so a batch can send
// the common cases of many commands ahead, in one round trip with its
// prefetch (QueueAtOnce), before it knows which are duplicates.

const grantAtOnceSQL = `
	INSERT INTO locks AS l (namespace, lock_name, status, owner_id, fencing_token, acquired_at, expires_at,
		lease_duration, owner_metadata, acquisition_count, reply_to, holder_request_id, source_partition, updated_at)
	SELECT $1, $2, 'acquired', $3, nextval('fencing_tokens'), t.now, t.now + make_interval(secs => $4::float8),
		$4, $5, 1, nullif($6, ''), nullif($7, ''), $8, t.now
	FROM (SELECT clock_timestamp() AS now) t
	WHERE NOT EXISTS (SELECT FROM processed_requests WHERE request_id = $7)
	ON CONFLICT (namespace, lock_name) DO UPDATE SET
		status = 'acquired', owner_id = EXCLUDED.owner_id, fencing_token = nextval('fencing_tokens'),
		(acquired_at, expires_at, updated_at) = (SELECT n, n + make_interval(secs => $4::float8), n FROM (SELECT clock_timestamp() AS n) t),
		lease_duration = EXCLUDED.lease_duration, owner_metadata = EXCLUDED.owner_metadata,
		acquisition_count = l.acquisition_count + 1, extension_count = 0, reply_to = EXCLUDED.reply_to,
		holder_request_id = EXCLUDED.holder_request_id, source_partition = EXCLUDED.source_partition
	WHERE l.status IN ('released', 'expired') AND l.waiter_count = 0
	RETURNING ` + lockCols

const releaseAtOnceSQL = `
	UPDATE locks SET status = 'released', updated_at = clock_timestamp()
	WHERE namespace = $1 AND lock_name = $2 AND status = 'acquired' AND owner_id = $3 AND waiter_count = 0
		AND expires_at > clock_timestamp() AND ($4::bigint IS NULL OR fencing_token = $4)
		AND NOT EXISTS (SELECT FROM processed_requests WHERE request_id = $5)
	RETURNING ` + lockCols

// atOnceStatement is the command's one-statement common case, if it has one.
func (a *applier) atOnceStatement() (string, []any, bool) {
	c := a.cmd
	switch c.Operation {
	case topics.OpAcquire:
		return grantAtOnceSQL, []any{c.Namespace, c.LockName, c.OwnerID, a.lease(), metadata(c.OwnerMetadata),
			c.ReplyTo, c.RequestID, a.env.Partition}, true
	case topics.OpRelease:
		return releaseAtOnceSQL, []any{c.Namespace, c.LockName, c.OwnerID, c.FencingToken, c.RequestID}, true
	}
	return "", nil, false
}

// atOnce runs the command's common case, or takes its result when the batch
// sent it ahead, and returns the row it changed (nil: not the common case).
func (a *applier) atOnce(ctx context.Context) (*lockRow, error) {
	if r, ok := a.ahead[a.cmd.RequestID]; ok {
		delete(a.ahead, a.cmd.RequestID)
		return r, nil
	}
	sql, args, _ := a.atOnceStatement()
	r, err := scanLock(a.tx.QueryRow(ctx, sql, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s in one statement: %w", a.cmd.Operation, err)
	}
	return r, nil
}

// QueueAtOnce queues on pb the common cases of the commands that can go ahead
// of the rest of the batch: acquires and releases that are the first command
// of their lock, with a request_id no other command of cmds has, before the
// first cleanup (which must see the commands before it, and only those).
// Apply then uses their results. pb's Close returns their errors.
func (b *Batch) QueueAtOnce(pb *pgx.Batch, cmds []topics.Command) {
	ids := make(map[string]int, len(cmds))
	for _, c := range cmds {
		ids[c.RequestID]++
	}
	locks := make(map[string]bool, len(cmds))
	for _, c := range cmds {
		if c.Operation == topics.OpCleanup {
			return
		}
		key := c.Key()
		first := !locks[key]
		locks[key] = true
		if !first || c.RequestID == "" || ids[c.RequestID] > 1 {
			continue
		}
		a := &applier{Batch: b, cmd: c}
		sql, args, ok := a.atOnceStatement()
		if !ok {
			continue
		}
		id := c.RequestID
		b.ahead[id] = nil
		pb.Queue(sql, args...).QueryRow(func(row pgx.Row) error {
			r, err := scanLock(row)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%s of lock %q in one statement: %w", c.Operation, key, err)
			}
			b.ahead[id] = r
			return nil
		})
	}
}
