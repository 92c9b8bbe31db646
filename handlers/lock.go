package handlers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/topics"
)

// lockRow is a locks row as one transaction sees it, with the database time
// taken after the row was locked.
type lockRow struct {
	namespace, name string
	status          string
	owner           string
	token           int64
	acquiredAt      *time.Time
	expiresAt       *time.Time
	lease           float64
	metadata        []byte
	acquisitions    int64
	extensions      int64
	replyTo         string
	holderRequestID string
	waiters         int
	now             time.Time
}

const lockCols = `namespace, lock_name, status, coalesce(owner_id, ''), coalesce(fencing_token, 0),
	acquired_at, expires_at, coalesce(lease_duration, 0), owner_metadata, acquisition_count,
	extension_count, coalesce(reply_to, ''), coalesce(holder_request_id, ''), waiter_count, clock_timestamp()`

func scanLock(row pgx.Row) (*lockRow, error) {
	var r lockRow
	if err := row.Scan(r.dest()...); err != nil {
		return nil, err
	}
	return &r, nil
}

// dest is where lockCols are scanned to.
func (r *lockRow) dest() []any {
	return []any{&r.namespace, &r.name, &r.status, &r.owner, &r.token, &r.acquiredAt, &r.expiresAt,
		&r.lease, &r.metadata, &r.acquisitions, &r.extensions, &r.replyTo, &r.holderRequestID, &r.waiters, &r.now}
}

// held reports whether a lease is in force at the row's database time.
func (r *lockRow) held() bool {
	return r.status == topics.StatusAcquired && r.expiresAt != nil && r.expiresAt.After(r.now)
}

// ended reports whether a lease has run out but nobody has said so yet.
func (r *lockRow) ended() bool {
	return r.status == topics.StatusAcquired && !r.held()
}

// info is the row as the contract's lock_info, with status as of r.now.
func (r *lockRow) info() *topics.LockInfo {
	li := &topics.LockInfo{
		Namespace:        r.namespace,
		LockName:         r.name,
		OwnerID:          r.owner,
		Status:           r.status,
		FencingToken:     r.token,
		LeaseDuration:    r.lease,
		AcquisitionCount: r.acquisitions,
		ExtensionCount:   r.extensions,
		OwnerMetadata:    r.metadata,
	}
	if r.ended() {
		li.Status = topics.StatusExpired
	}
	if r.acquiredAt != nil {
		li.AcquiredAt = topics.NewTimePtr(*r.acquiredAt)
	}
	if r.expiresAt != nil {
		li.ExpiresAt = topics.NewTimePtr(*r.expiresAt)
	}
	return li
}

// applier carries one command through its handler.
type applier struct {
	*Batch
	cmd      topics.Command
	op       operation // cmd's row of operations
	polledAt time.Time
	caused   []topics.Event
}

// lockForUpdate locks an existing row. When there is none it returns a row of
// status free, which exists only in memory.
func (b *Batch) lockForUpdate(ctx context.Context, ns, name string) (*lockRow, error) {
	return b.readLock(ctx, ns, name, " FOR UPDATE")
}

func (b *Batch) readLock(ctx context.Context, ns, name, suffix string) (*lockRow, error) {
	r, err := scanLock(b.tx.QueryRow(ctx, `SELECT `+lockCols+` FROM locks WHERE namespace = $1 AND lock_name = $2`+suffix, ns, name))
	if errors.Is(err, pgx.ErrNoRows) {
		r = &lockRow{namespace: ns, name: name, status: topics.StatusFree}
		err = b.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&r.now)
	}
	if err != nil {
		return nil, fmt.Errorf("reading lock row: %w", err)
	}
	return r, nil
}

// event starts an event of the current command about r.
func (a *applier) event(typ string, r *lockRow) *pending {
	ev := topics.NewEvent(typ, a.cmd.Operation, a.cmd.RequestID, r.now)
	ev.LockInfo = r.info()
	return &pending{ev: &ev, polledAt: a.polledAt}
}

// reply sends the command's own answer to its reply_to and stores it as the
// request's outcome.
func (a *applier) reply(p *pending) {
	a.emit(a.cmd.ReplyTo, a.cmd.Key(), p)
	a.remember(a.cmd.RequestID, a.cmd.ReplyTo, p)
	a.caused = append(a.caused, *p.ev)
}

// reject answers the command with lock.rejected.
func (a *applier) reject(code, msg string, r *lockRow) {
	p := a.event(topics.TypeRejected, r)
	p.ev.ErrorCode, p.ev.ErrorMessage = code, msg
	if code == topics.CodeLockHeld {
		s := math.Round(r.expiresAt.Sub(r.now).Seconds()*1000) / 1000
		p.ev.RetryAfterSeconds = &s
	}
	a.reply(p)
}

// notify sends an event that is not the command's own answer (an expiry, a
// waiter's grant) to topic and, for lifecycle types, to the lifecycle topic.
func (a *applier) notify(p *pending, replyTo string) {
	key := topics.LockKey(p.ev.LockInfo.Namespace, p.ev.LockInfo.LockName)
	a.emit(replyTo, key, p)
	a.emit(a.env.Names.Lifecycle(p.ev.Type), key, p)
	a.caused = append(a.caused, *p.ev)
}

// recordHistory appends the event to lock_events.
func (a *applier) recordHistory(ev *topics.Event) {
	li := ev.LockInfo
	a.history = append(a.history, historyRow{
		eventID: ev.EventID, namespace: li.Namespace, lockName: li.LockName,
		typ: ev.Type, owner: li.OwnerID, token: li.FencingToken, at: ev.OccurredAt.Time,
	})
}

// settle ends a lease that has run out (lock.expired to its holder and the
// lifecycle topic) and hands a free lock to its next live waiter. It returns
// the owner whose lease it ended, or "".
func (a *applier) settle(ctx context.Context, r *lockRow) (endedOwner string, err error) {
	if r.ended() {
		endedOwner = r.owner
		if _, err := a.tx.Exec(ctx, `UPDATE locks SET status = 'expired', updated_at = $3 WHERE namespace = $1 AND lock_name = $2`,
			r.namespace, r.name, r.now); err != nil {
			return "", fmt.Errorf("expiring lease: %w", err)
		}
		a.expired(r)
	}
	if !r.held() {
		if err := a.grantNext(ctx, r); err != nil {
			return "", err
		}
	}
	return endedOwner, nil
}

// expired emits lock.expired for a lease whose row was just marked expired.
func (a *applier) expired(r *lockRow) {
	r.status = topics.StatusExpired
	ev := topics.NewEvent(topics.TypeExpired, topics.OpExpire, "", r.now)
	ev.LockInfo = r.info()
	p := &pending{ev: &ev}
	a.notify(p, r.replyTo)
	a.recordHistory(p.ev)
}
