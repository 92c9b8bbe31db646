package handlers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// lockRow is a locks row as one transaction sees it, with the database time
// taken after the row was locked.
type lockRow struct {
	namespace, name string
	status          string
	limit           int
	holders         int
	waiters         int
	acquisitions    int64
	// revision counts the lock's changes (topics.LockState.Revision); a
	// change adds one before its events are made.
	revision int64
	// partition is the commands partition of the lock's last grant (its
	// key's).
	partition int32
	// ended is the lease that ended last (Owner "": none).
	ended              rules.Holder
	endedAt, endedTill *time.Time
	now                time.Time
	// delayUntil is the end of the lock's lock-delay (nil: none).
	delayUntil *time.Time
}

// lockFields are a lock row's columns as lockRow holds them; lockCols adds
// the time, for a statement that reads rows it does not wait for or that
// it changes itself (RETURNING is computed after the wait).
const (
	lockFields = `namespace, lock_name, status, lock_limit, holder_count, waiter_count, acquisition_count, revision, source_partition,
	coalesce(ended_owner_id, ''), coalesce(ended_mode, 'exclusive'), coalesce(ended_fencing_token, 0),
	ended_acquired_at, ended_expires_at, coalesce(ended_lease_duration, 0),
	ended_owner_metadata, ended_extension_count, delay_until`
	lockCols = lockFields + `, clock_timestamp()`
)

// lockRowLocking locks the row of the lock whose key is ns and name (SQL
// expressions) and reads it, FOR UPDATE, then skip: "" waits for a row
// another transaction holds, " SKIP LOCKED" skips it (that transaction
// settles the lock).
func lockRowLocking(ns, name, skip string) string {
	return `SELECT ` + lockFields + ` FROM locks WHERE namespace = ` + ns + ` AND lock_name = ` + name + ` FOR UPDATE` + skip
}

// rowLock is how a load locks and reads its locks' rows, each row's time
// read after its own row lock (timedAfterLock): one for one key ($1 and
// $2, then the load's args), many for several (lockRows: $1 and $2
// keysTable's arrays).
type rowLock struct{ one, many string }

// lockRowSQL and lockRowSkipSQL lock rows as lockRowLocking does, waiting
// for them or skipping them. Only these have a form for several keys:
// loadLock's create, the one other form, loads one lock.
var (
	lockRowSQL     = lockRows("")
	lockRowSkipSQL = lockRows(" SKIP LOCKED")
)

// keysTable is the keys of a load of several locks, $1 and $2 the arrays
// of their namespaces and names, numbered from 1 in their order (ord).
const keysTable = `unnest($1::text[], $2::text[]) WITH ORDINALITY k(ns, name, ord)`

// lockRows is the rowLock that locks with skip (lockRowLocking). Its many
// form returns each row found with its key's ord first and locks the rows
// in key order, the order every transaction takes lock rows in (no
// deadlock): each key's row is locked by its own look-up of the key
// (locks_pkey), in a LATERAL subquery that PostgreSQL cannot flatten (it
// locks), which the nested loop over keysTable runs for each key in turn
// (a LATERAL reference allows no other join, whatever the statistics).
// One statement, so one snapshot: a row deleted and created anew while it
// waited for an earlier key is missed, where a statement per key saw the
// new one; the new row has nothing the caller loads it for (a lease, a
// wait, a due time: only an idle row is deleted).
func lockRows(skip string) rowLock {
	return rowLock{
		one: timedAfterLock(lockRowLocking("$1", "$2", skip)),
		many: timedAfterLock(`SELECT k.ord, r.* FROM ` + keysTable + `
			CROSS JOIN LATERAL (` + lockRowLocking("k.ns", "k.name", skip) + `) r ORDER BY k.ord`),
	}
}

// timedAfterLock adds the time to the columns of a locking SELECT, read
// outside it: a SELECT ... FOR UPDATE computes its columns before it waits
// for the row, and computes them again after only if the transaction waited
// for changed the row, so the time read beside them would be from before
// the wait when that transaction merely locked the row (a refused command).
func timedAfterLock(locking string) string {
	return `SELECT r.*, clock_timestamp() FROM (` + locking + `) r`
}

// dest is where lockCols are scanned to; call scanned after.
func (r *lockRow) dest() []any {
	return []any{&r.namespace, &r.name, &r.status, &r.limit, &r.holders, &r.waiters, &r.acquisitions, &r.revision, &r.partition,
		&r.ended.Owner, &r.ended.Mode, &r.ended.Token, &r.endedAt, &r.endedTill, &r.ended.Lease,
		&r.ended.Metadata, &r.ended.Extensions, &r.delayUntil, &r.now}
}

// lock is the rules' view of the row alone: its limit, counts, the lease
// that ended last (shown only while nobody holds the lock: only a lease
// this command ends can make it so) and its lock-delay.
func (r *lockRow) lock() *rules.Lock {
	l := &rules.Lock{Limit: r.limit, Waiting: r.waiters, Acquisitions: r.acquisitions, Now: r.now}
	if r.ended.Owner != "" && r.holders == 0 {
		l.Ended, l.EndedStatus = &r.ended, rules.Status(r.status)
	}
	if r.delayUntil != nil {
		l.DelayUntil = *r.delayUntil
	}
	return l
}

// scanned completes a row scanned to dest.
func (r *lockRow) scanned() {
	if r.endedAt != nil {
		r.ended.AcquiredAt = *r.endedAt
	}
	if r.endedTill != nil {
		r.ended.ExpiresAt = *r.endedTill
	}
}

// holderCols: a session's lease shows its session's expiry (sessionExpiry).
const holderCols = `owner_id, mode, fencing_token, acquired_at, coalesce(expires_at, ` + sessionExpiry + `, acquired_at), lease_duration,
	owner_metadata, extension_count, coalesce(reply_to, ''), coalesce(request_id, ''), source_partition, coalesce(session_id, ''),
	lock_delay, max_hold`

func holderDest(h *rules.Holder) []any {
	return []any{&h.Owner, &h.Mode, &h.Token, &h.AcquiredAt, &h.ExpiresAt, &h.Lease, &h.Metadata,
		&h.Extensions, &h.ReplyTo, &h.RequestID, &h.Partition, &h.Session, &h.LockDelay, &h.MaxHold}
}

// waiterCols: a wait whose session's row is gone shows it long expired,
// so that a hand-off asks (rules.Lock.SessionLive) rather than grant it.
const waiterCols = `id, owner_id, mode, request_id, lease_duration, owner_metadata, coalesce(reply_to, ''), deadline, source_partition,
	coalesce(session_id, ''), CASE WHEN session_id IS NULL THEN deadline ELSE coalesce(` + sessionExpiry + `, 'epoch') END, lock_delay, max_hold`

func waiterDest(w *rules.Waiter) []any {
	return []any{&w.ID, &w.Owner, &w.Mode, &w.RequestID, &w.Lease, &w.Metadata, &w.ReplyTo, &w.Deadline, &w.Partition,
		&w.Session, &w.SessionExpires, &w.LockDelay, &w.MaxHold}
}

// info is the contract's lock_info of the lock, showing in.
func (r *lockRow) info(in rules.Info) *topics.LockInfo {
	h := in.Holder
	li := &topics.LockInfo{
		Namespace:        r.namespace,
		LockName:         r.name,
		OwnerID:          h.Owner,
		Status:           string(in.Status),
		FencingToken:     h.Token,
		LeaseDuration:    h.Lease,
		AcquisitionCount: in.Acquisitions,
		ExtensionCount:   h.Extensions,
		OwnerMetadata:    h.Metadata,
		Limit:            in.Limit,
		Revision:         r.revision,
		SessionID:        h.Session,
	}
	if h.Owner != "" {
		li.Mode = string(h.Mode)
		li.AcquiredAt = topics.NewTimePtr(h.AcquiredAt)
		li.ExpiresAt = topics.NewTimePtr(h.ExpiresAt)
		li.MaxHold = h.MaxHold
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
	// writes, when set, takes apply's writes for the caller to send, with
	// other locks' (settleLocks); nil: apply sends them.
	writes *lockWrites
	// metadata is an acquire's owner_metadata as jsonb stores it (keys
	// ordered, a repeated key's last value, numbers and spacing as jsonb
	// writes them), read by loadLocks: the lease shows it, as the common
	// cases' grant shows what it inserted.
	metadata []byte
}

// headPage is how many live waiters beyond the lock's limit a transaction
// reads with the lock (the rest page in when a hand-off reaches them): a
// hand-off grants at most limit exclusive waiters, or a run of shared ones.
// Each read takes one waiter more, to tell whether any follows
// (rules.Lock.More).
const headPage = 16

// lockState is a lock as a transaction loaded it for the rules.
type lockState struct {
	row *lockRow
	l   *rules.Lock
	// ending is the waits of the sessions the load was for (loadLocks),
	// wherever they are in the queue.
	ending []rules.Waiter
	// err is the first error of the rules' callbacks (NextTokens, More).
	err error
}

// loadLock locks the lock's row and loads what the rules decide from: its
// holders, the head of its queue, its waiters past their deadline and
// owner's waiter. Without a row, the lock is free and exists only in
// memory. create is set for an acquire that may take the lock (not one
// already refused for its session): the row is created if missing, and
// owner's lease in a lapsed session is read again (rereadLapsedSession).
func (a *applier) loadLock(ctx context.Context, ns, name, owner string, create bool) (*lockState, error) {
	key := []lockKey{{ns, name}}
	var states []*lockState
	var err error
	if create {
		// Create the row if missing and lock it, in one statement: racing
		// acquirers of a new lock all wait here for the first one's commit.
		states, err = a.loadLocks(ctx, key, owner, true, nil, rowLock{one: `
			INSERT INTO locks AS l (namespace, lock_name, status, source_partition) VALUES ($1, $2, 'free', $3)
			ON CONFLICT (namespace, lock_name) DO UPDATE SET status = l.status
			RETURNING ` + lockCols}, a.env.Partition)
	} else {
		states, err = a.loadLocks(ctx, key, owner, false, nil, lockRowSQL)
	}
	if err != nil {
		return nil, err
	}
	if states[0] != nil {
		return states[0], nil
	}
	r := &lockRow{namespace: ns, name: name, status: topics.StatusFree, limit: 1}
	if err := a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&r.now); err != nil {
		return nil, fmt.Errorf("reading the time: %w", err)
	}
	r.scanned()
	return a.newLockState(ctx, r, nil), nil
}

// loadLocks locks the rows of the locks keys, in that order, by rowSQL
// (args follow a single key's) and loads what the rules decide from, as
// loadLock does (acquiring: its create, which also reads the acquire's
// owner_metadata as stored, applier.metadata); a key without a row (or
// skipped, by SKIP LOCKED) has none; the waits of each lock's sessions
// (nil: none) are loaded too, as lockState.ending. The rows and holders of
// all the locks take one round trip, two statements whatever their number
// (queueLock for one, queueLocks for more; the statements of a pipeline
// run in order, so the holders are read under the row locks), and the
// waiters of those that have any one more.
func (a *applier) loadLocks(ctx context.Context, keys []lockKey, owner string, acquiring bool, sessions map[lockKey][]string, rowSQL rowLock,
	args ...any) ([]*lockState, error) {
	rows := make([]lockRow, len(keys))
	found := make([]bool, len(keys))
	holders := make([][]rules.Holder, len(keys))
	pb := &pgx.Batch{}
	if len(keys) == 1 {
		queueLock(pb, &rows[0], &found[0], &holders[0], keys[0].ns, keys[0].name, rowSQL.one, args...)
	} else {
		queueLocks(pb, keys, rowSQL.many, rows, found, holders)
	}
	if m := metadata(a.cmd.OwnerMetadata); acquiring && m != nil {
		// In this round trip: a statement more, no round trip more.
		pb.Queue(`SELECT $1::jsonb`, m).QueryRow(func(row pgx.Row) error { return row.Scan(&a.metadata) })
	}
	if err := a.tx.SendBatch(ctx, pb).Close(); err != nil {
		return nil, err
	}
	states := make([]*lockState, len(keys))
	pb = &pgx.Batch{}
	for i := range keys {
		if !found[i] {
			continue
		}
		r := &rows[i]
		r.scanned()
		if acquiring {
			if err := a.rereadLapsedSession(ctx, r, holders[i], owner); err != nil {
				return nil, err
			}
		}
		states[i] = a.newLockState(ctx, r, holders[i])
		if r.waiters > 0 {
			a.queueWaiters(ctx, pb, states[i], owner, sessions[keys[i]], dueBound(len(keys)))
		}
	}
	if pb.Len() > 0 {
		if err := a.tx.SendBatch(ctx, pb).Close(); err != nil {
			return nil, err
		}
	}
	return states, nil
}

// rereadLapsedSession reads again, for an acquire by owner, the session of
// owner's lease among hs when it looks past its expiry (as holderCols read
// it): rules.Lock.Acquire would end that lease as lapsed. Only an acquire
// that reaches that lapse reads it: one without a session_id, or one whose
// session passed its check (sessionAcquire) and is not the lease's. One
// refused for its session (loadLocks is then not acquiring), or in the
// lease's own session (refused when that session is past its expiry),
// neither waits here nor holds the session's row for the rest of its batch.
// The session's row is locked FOR SHARE, which waits, unlike a hand-off's
// SessionLive, for a keep-alive in flight (one that found the session live
// renews it whatever its commit time, and its new expiry, if still ahead,
// keeps the lease) and for an end in flight (which must not be answered live: the
// lease, renewed with an expiry of its own, would escape it; it deletes
// the row, and the lease lapses). An end waits for this transaction's lock
// row in turn: PostgreSQL aborts one of the two (40P01, kept in the error
// chain) and the whole transaction is retried, as for any deadlock.
//
// The lease shows the expiry read here, and r's time becomes the time read
// after that wait (timedAfterLock), before the waiters are read with it:
// the whole decision is taken at that time, as every other one is at the
// time after its last row wait. A keep-alive may commit after its own new
// expiry; judged by the time read before the wait, its session would look
// live and the lease would escape the session's end. Nor is it enough to
// judge the lapse alone by the later time: Settle and the waiters past
// their deadline would still be at the earlier one, and a lease lapsed at
// the later time would show an expiry after the acquired_at of the grant
// that follows it, its lock-delay running from the earlier time.
func (a *applier) rereadLapsedSession(ctx context.Context, r *lockRow, hs []rules.Holder, owner string) error {
	i := slices.IndexFunc(hs, func(h rules.Holder) bool { return h.Owner == owner })
	if i < 0 || hs[i].Session == "" || hs[i].Session == a.cmd.SessionID || hs[i].ExpiresAt.After(r.now) {
		return nil
	}
	id := hs[i].Session
	err := a.tx.QueryRow(ctx, timedAfterLock(`SELECT expires_at FROM sessions WHERE id = $1 FOR SHARE`), id).Scan(&hs[i].ExpiresAt, &r.now)
	if errors.Is(err, pgx.ErrNoRows) {
		// Ended: the lease lapses, showing the expiry read before
		// (acquired_at if the row was gone already, holderCols: no end of
		// the lease, so its lock-delay runs from the time read here,
		// rules.Lock.EndLease).
		err = a.tx.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&r.now)
	}
	if err != nil {
		return fmt.Errorf("reading session %q again: %w", id, err)
	}
	return nil
}

// writeUnder is the partition settleLocks writes a lock's changes under.
type writeUnder bool

const (
	// lockPartition is the lock's own (forLock): what a sweep or a
	// session's end does to a lock follows the lock's other changes.
	lockPartition writeUnder = false
	// ownPartition is the applier's, the partition whose scheduler
	// reached the lock: a waiter's timeout follows its lock.queued,
	// written under the waiter's partition, and needs no other replica's
	// relay to be heard (whatever else Expire settles on that lock goes
	// with it).
	ownPartition writeUnder = true
)

// settleLocks decides, for many locks at once, what happens to each:
// it locks the rows of keys (distinct) by rowSQL and loads them, with the
// waits of their sessions, as loadLocks does, lets decide choose each
// loaded lock's effects and writes them under the partition under says,
// collecting their events in a.caused. The writes of all the locks take
// one round trip more, so a sweep or a session's end costs a few round
// trips, not a few per lock; what remains per lock is a round trip of
// fencing tokens per hand-off that grants and a page of waiters per
// hand-off beyond the head read. Keys go MaxSweep at a time, to bound what
// one pipeline holds.
func (a *applier) settleLocks(ctx context.Context, keys []lockKey, sessions map[lockKey][]string, rowSQL rowLock, under writeUnder,
	decide func(lockKey, *lockState) []rules.Effect) error {
	for chunk := range slices.Chunk(keys, MaxSweep) {
		states, err := a.loadLocks(ctx, chunk, "", false, sessions, rowSQL)
		if err != nil {
			return fmt.Errorf("reading locks: %w", err)
		}
		writes := &lockWrites{}
		for i, s := range states {
			if s == nil {
				continue
			}
			p := s.row.partition
			if under == ownPartition {
				p = a.env.Partition
			}
			la := a.forLock(p)
			la.writes = writes
			err := la.apply(ctx, s, decide(chunk[i], s))
			a.caused = append(a.caused, la.caused...)
			if err != nil {
				return err
			}
		}
		if err := writes.send(ctx, a.tx); err != nil {
			return fmt.Errorf("writing locks: %w", err)
		}
	}
	return nil
}

// lockWrites is the writes of the locks settleLocks decides together, sent
// in one round trip: each lock's in its decision's order (batch), but the
// deletes of the leases they end in one statement ahead of them all
// (ended), and the updates of their rows in one statement after them all
// (rows), rather than a statement per lock for each (a session's end of
// 10,000 leases, one lock each: 0.83 to 0.89 times the time,
// BenchmarkSessionEnd). Neither moves a write past
// another of the same rows: the leases ended are holder rows their locks
// had when loaded, which nothing earlier in the batch wrote (deleteHolder
// keeps a delete in its place after a holder row of its lock was written),
// and a grant after them may insert a key a delete freed; a row's update
// is its lock's last write; and the locks are distinct, so no lock's
// writes touch another's rows.
type lockWrites struct {
	batch pgx.Batch
	ended columns // deleteHolderSQL's values
	rows  columns // lockRowValues
}

// send writes w in one round trip.
func (w *lockWrites) send(ctx context.Context, tx pgx.Tx) error {
	pb := &pgx.Batch{}
	if len(w.ended) > 0 {
		pb.Queue(deleteHoldersSQL, w.ended...)
	}
	pb.QueuedQueries = append(pb.QueuedQueries, w.batch.QueuedQueries...)
	if len(w.rows) > 0 {
		pb.Queue(updateLockRowsSQL, w.rows...)
	}
	if pb.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, pb).Close()
}

// columns are the values of the rows of a set-based statement, an array
// per column (nil: no row).
type columns []any

// add adds a row of values.
func (c *columns) add(row ...any) {
	if *c == nil {
		*c = make(columns, len(row))
		for i := range row {
			(*c)[i] = []any{}
		}
	}
	for i, v := range row {
		(*c)[i] = append((*c)[i].([]any), v)
	}
}

// deleteHoldersSQL deletes the leases of arrays of deleteHolderSQL's
// values, each holder row found by its own look-up (lock_holders_pkey, in
// a LATERAL subquery that OFFSET 0 keeps apart) and deleted by its ctid,
// which the array of them makes a TID scan whatever the statistics: a join
// of the arrays to lock_holders may be planned as a scan of the table. The
// rows are under their locks' row locks, so no other transaction gives one
// a new ctid meanwhile.
const deleteHoldersSQL = `DELETE FROM lock_holders WHERE ctid = ANY (ARRAY(
	SELECT h.tid FROM unnest($1::text[], $2::text[], $3::text[]) AS u(ns, nm, own),
		LATERAL (SELECT h.ctid AS tid FROM lock_holders h WHERE h.namespace = u.ns AND h.lock_name = u.nm AND h.owner_id = u.own OFFSET 0) h))`

// updateLockRowsSQL updates locks rows to arrays of lockRowValues, each row
// found by its own look-up and updated by its ctid, as deleteHoldersSQL.
var updateLockRowsSQL = func() string {
	arrays, cols := make([]string, len(lockRowTypes)), make([]string, len(lockRowTypes))
	for i, t := range lockRowTypes {
		arrays[i], cols[i] = fmt.Sprintf("$%d::%s[]", i+1, t), fmt.Sprintf("c%d", i+1)
	}
	return `WITH u AS (
		SELECT u.*, k.tid FROM unnest(` + strings.Join(arrays, ", ") + `) AS u(` + strings.Join(cols, ", ") + `),
			LATERAL (SELECT k.ctid AS tid FROM locks k WHERE k.namespace = u.c1 AND k.lock_name = u.c2 OFFSET 0) k)
	UPDATE locks l SET ` + lockRowSet(func(n int) string { return "u.c" + strconv.Itoa(n) }) + `
	FROM u WHERE l.ctid = ANY (ARRAY(SELECT tid FROM u)) AND l.ctid = u.tid`
}()

// newLockState is the lock of row r with its holders hs, drawing fencing
// tokens in the transaction.
func (a *applier) newLockState(ctx context.Context, r *lockRow, hs []rules.Holder) *lockState {
	l := r.lock()
	s := &lockState{row: r, l: l}
	if len(hs) > 0 {
		l.Holders = hs
	}
	// A hand-off's tokens in one round trip, drawn after the row lock
	// (drawn before, one could be below a token the lock's previous
	// holder drew after it).
	l.NextTokens = func(n int) []int64 {
		var ts []int64
		rows, err := a.tx.Query(ctx, `SELECT nextval('fencing_tokens') FROM generate_series(1, $1)`, n)
		if err == nil {
			ts, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if err == nil && len(ts) != n {
			err = fmt.Errorf("%d tokens for %d", len(ts), n)
		}
		if err != nil {
			if s.err == nil {
				s.err = fmt.Errorf("taking fencing tokens: %w", err)
			}
			return make([]int64, n)
		}
		slices.Sort(ts) // in the order the grants are made
		return ts
	}
	// The session's row locked FOR SHARE keeps a keep-alive and an end of
	// it off until this transaction ends. A command of the session or its
	// end in flight holds the row already: it is not waited for (an end
	// would wait for this transaction's lock rows in turn), and the
	// session counts as live, as it was before; a keep-alive that found it
	// live renews it, and one that finds it expired, a close, an open or
	// an end ends it, with what is granted here.
	l.SessionLive = func(id string) (time.Time, bool) {
		var t time.Time
		var live bool
		err := a.tx.QueryRow(ctx, `SELECT expires_at, expires_at > clock_timestamp() FROM sessions WHERE id = $1 FOR SHARE SKIP LOCKED`,
			id).Scan(&t, &live)
		if errors.Is(err, pgx.ErrNoRows) {
			err = a.tx.QueryRow(ctx, `SELECT expires_at FROM sessions WHERE id = $1`, id).Scan(&t)
			live = err == nil
			if errors.Is(err, pgx.ErrNoRows) {
				err = nil // ended
			}
		}
		if err != nil && s.err == nil {
			s.err = fmt.Errorf("reading session %q: %w", id, err)
		}
		return t, live && err == nil
	}
	return s
}

// queueLock queues on pb the read of lock ns/name's row into r by rowSQL
// (its $1 and $2 the lock's key, then args), found telling whether there
// was one, then the read of all its holders into *hs. The statements of a
// pipeline run in order, so the holders are read under the row lock that
// rowSQL takes.
func queueLock(pb *pgx.Batch, r *lockRow, found *bool, hs *[]rules.Holder, ns, name, rowSQL string, args ...any) {
	pb.Queue(rowSQL, append([]any{ns, name}, args...)...).QueryRow(func(row pgx.Row) error {
		err := row.Scan(r.dest()...)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading lock row: %w", err)
		}
		*found = true
		return nil
	})
	queueHolders(pb, ns, name, 0, hs)
}

// queueLocks queues on pb what queueLock does for each of several keys, in
// two statements: the read of their rows by many (a rowLock's) into rows,
// found telling which had one, then the read of all their holders into
// hs, by lock (holdersOfKeysSQL). The holders of a key whose row was
// skipped (SKIP LOCKED) are read too, unlocked (the statement cannot tell
// which were), and left unused.
func queueLocks(pb *pgx.Batch, keys []lockKey, many string, rows []lockRow, found []bool, hs [][]rules.Holder) {
	ns, names := make([]string, len(keys)), make([]string, len(keys))
	for i, k := range keys {
		ns[i], names[i] = k.ns, k.name
	}
	pb.Queue(many, ns, names).Query(func(rs pgx.Rows) error {
		var ord int
		var r lockRow
		if _, err := pgx.ForEachRow(rs, append([]any{&ord}, r.dest()...), func() error {
			rows[ord-1], found[ord-1] = r, true
			return nil
		}); err != nil {
			return fmt.Errorf("reading lock rows: %w", err)
		}
		return nil
	})
	pb.Queue(holdersOfKeysSQL, ns, names).Query(func(rs pgx.Rows) error {
		var ord int
		var h rules.Holder
		if _, err := pgx.ForEachRow(rs, append([]any{&ord}, holderDest(&h)...), func() error {
			hs[ord-1] = append(hs[ord-1], h)
			return nil
		}); err != nil {
			return fmt.Errorf("reading holders: %w", err)
		}
		return nil
	})
}

// holdersOf reads the holders of the lock whose key is ns and name (SQL
// expressions) in grant order.
func holdersOf(ns, name string) string {
	return `SELECT ` + holderCols + ` FROM lock_holders WHERE namespace = ` + ns + ` AND lock_name = ` + name + ` ORDER BY fencing_token`
}

// holdersOfKeysSQL reads the holders of the keys of keysTable, each with
// its key's ord first, by key then in grant order: each key's by its own
// look-up (holdersOf, in a LATERAL subquery that its ORDER BY keeps
// PostgreSQL from flattening into a join that statistics could make a
// scan of lock_holders).
var holdersOfKeysSQL = `SELECT k.ord, h.* FROM ` + keysTable + ` CROSS JOIN LATERAL (` + holdersOf("k.ns", "k.name") + `) h
	ORDER BY k.ord, h.fencing_token`

// queueHolders queues on pb the read of a lock's first limit holders (0:
// all), in grant order, appended to *hs. A command reads them all: the
// rules decide from every lease (counts, modes, expiries, the owner's), so
// a lock of R holders costs each of its commands R rows, each with its
// owner_metadata (up to 4 KiB); no index orders a lock's holders by token
// (docs/design.md, Tables: what a widely held lock costs).
func queueHolders(pb *pgx.Batch, ns, name string, limit int, hs *[]rules.Holder) {
	pb.Queue(holdersOf("$1", "$2")+` LIMIT nullif($3::int, 0)`, ns, name, limit).
		Query(func(rows pgx.Rows) error {
			var h rules.Holder
			if _, err := pgx.ForEachRow(rows, holderDest(&h), func() error { *hs = append(*hs, h); return nil }); err != nil {
				return fmt.Errorf("reading holders: %w", err)
			}
			return nil
		})
}

// dueBound is how many of its waiters past their deadline a load of n locks
// reads of each (the oldest; rules.Lock.Due): a decision answers them all,
// with an event and a delete each, so a backlog of them is answered a bound
// at a time, the rest by the next command or expiry step. A load answers
// at most MaxSweep of them, or one of each lock when it loads more locks.
func dueBound(n int) int { return max(1, MaxSweep/n) }

// queueWaiters queues on pb the read of the head of s's queue, its waiters
// past their deadline (the due oldest), owner's waiter (with its place
// when the command is an acquire, which a requeue answers with) and the
// waits of sessions, in one statement (waitersSQL).
func (a *applier) queueWaiters(ctx context.Context, pb *pgx.Batch, s *lockState, owner string, sessions []string, due int) {
	r, l := s.row, s.l
	page := r.limit + headPage
	placed := a.cmd.Operation == topics.OpAcquire
	pb.Queue(waitersSQL, r.namespace, r.name, r.now, owner, page+1, sessions, due, placed).Query(func(rows pgx.Rows) error {
		var w rules.Waiter
		var due, head, mine, ending bool
		var position *int
		heads := 0
		_, err := pgx.ForEachRow(rows, append(waiterDest(&w), &due, &head, &mine, &position, &ending), func() error {
			if ending {
				s.ending = append(s.ending, w)
			}
			switch {
			case due:
				l.Due = append(l.Due, w)
			case head:
				// The one past the page (the last head row, in id order)
				// only tells that more follow.
				if heads++; heads <= page {
					l.Head = append(l.Head, w)
				}
			}
			if mine {
				m := w
				if position != nil {
					m.Position = *position
				}
				l.Mine = &m
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading waiters: %w", err)
		}
		if heads > page {
			l.More = func(after int64) ([]rules.Waiter, bool) {
				ws, more, err := a.moreWaiters(ctx, r, after)
				if err != nil && s.err == nil {
					s.err = err
				}
				return ws, more
			}
		}
		return nil
	})
}

// waitersSQL reads a lock's ($1, $2) waiters that a decision at $3 needs:
// the head (the first $5 live ones), the $7 past their deadline with the
// oldest deadlines, owner $4's and those of sessions $6 (live or past
// their deadline: the owner's wait is the one it withdraws or gives a new
// request, and a session's end drops its waits), each once, in queue
// order, with whether it is past its deadline, whether it is in the head,
// whether it is owner's, its place (owner's, and only when $8: an
// acquire's, which a requeue answers with) and whether its session is one
// of $6. Each of the four sets is read by an index of its own
// (lock_waiters_fifo; lock_waiters_lock_deadline; the unique key;
// lock_waiters_session or lock_waiters_lock_session), the last two without
// the others' rows, so the statement reads what it returns: one WHERE with
// the four conditions ORed (no index serves them together) walked every
// waiter of the lock, and a queue of W cost O(W) per command, O(W²) to
// drain. The owner's wait is asked for as the first waiter from $4 on in
// owner order, which only the unique key gives without a sort, so it is
// the one PostgreSQL takes: asked by equality alone, every index of the
// lock's waiters estimates one row, whether the table was never analyzed
// or its statistics show many locks' waiters (n_distinct of lock_name
// near the row count, whatever one lock's queue holds), and it took the
// smallest, lock_waiters_lock_deadline, reading the lock's whole queue
// (10,000 queued in 56 s; 295 withdrawals a second). The head is read in
// id order, which lock_waiters_fifo gives, its deadline a filter (IS TRUE)
// and never an index condition: as one, where the statistics held a long
// queue, lock_waiters_lock_deadline looked the narrower, and PostgreSQL
// sorted the lock's whole live queue for its first few (120 pages a
// command on a queue of 5,000). Only owner's place counts the waiters
// before it, so only an acquire asks for it: a withdrawal or an extend by
// a waiter deep in the queue would read every waiter ahead of it, and a
// queue drained by withdrawals cost O(W²) again. $8 is a parameter, so
// the generic plan keeps the count, but CASE runs it only for a row its
// condition holds for. The count, too, reads the waiters ahead in id
// order, which only lock_waiters_fifo gives without a sort (an index-only
// scan up to owner's entry): counted unordered, PostgreSQL took
// lock_waiters_lock_deadline there as well and counted through the lock's
// whole queue, however near its front the owner waited (225 pages for the
// 101st of 10,000).
const waitersSQL = `
	WITH head AS (
		SELECT * FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND (deadline > $3) IS TRUE ORDER BY id LIMIT $5),
	due AS (
		SELECT * FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND deadline <= $3 ORDER BY deadline LIMIT $7)
	SELECT ` + waiterCols + `, deadline <= $3, in_head,
		owner_id = $4,
		CASE WHEN $8 AND owner_id = $4 THEN (SELECT count(*) FROM (
			SELECT q.id FROM lock_waiters q WHERE q.namespace = $1 AND q.lock_name = $2 AND q.id <= w.id ORDER BY q.id) q) END,
		coalesce(session_id = ANY($6), false)
	FROM (
		SELECT *, true AS in_head FROM head
		UNION ALL
		SELECT *, false FROM due
		UNION ALL
		SELECT *, false FROM (
			SELECT * FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND owner_id >= $4 ORDER BY owner_id LIMIT 1) o
		WHERE owner_id = $4 AND id NOT IN (SELECT id FROM head) AND id NOT IN (SELECT id FROM due)
		UNION ALL
		SELECT *, false FROM lock_waiters WHERE namespace = $1 AND lock_name = $2 AND session_id = ANY($6) AND owner_id <> $4
			AND id NOT IN (SELECT id FROM head) AND id NOT IN (SELECT id FROM due)
	) w
	ORDER BY id`

// moreWaiters reads the next page of live waiters after the one of ID
// after, and whether any follows.
func (a *applier) moreWaiters(ctx context.Context, r *lockRow, after int64) ([]rules.Waiter, bool, error) {
	page := r.limit + headPage
	rows, err := a.tx.Query(ctx, `SELECT `+waiterCols+` FROM lock_waiters
		WHERE namespace = $1 AND lock_name = $2 AND id > $3 AND deadline > $4 ORDER BY id LIMIT $5`,
		r.namespace, r.name, after, r.now, page+1)
	if err != nil {
		return nil, false, fmt.Errorf("reading waiters: %w", err)
	}
	var ws []rules.Waiter
	var w rules.Waiter
	if _, err := pgx.ForEachRow(rows, waiterDest(&w), func() error { ws = append(ws, w); return nil }); err != nil {
		return nil, false, fmt.Errorf("reading waiters: %w", err)
	}
	return ws[:min(page, len(ws))], len(ws) > page, nil
}

// forLock is the applier of the current command for what it does to a lock
// under partition: for a cleanup's sweep or a session's end the lock's own,
// often another than the command's, whose relay publishes the lock's other
// changes, so that the lock's records keep their order (a partition's rows
// go out in id order, and the lock's row lock makes that its commit
// order); for settleLocks with ownPartition the command's own. Its caused
// events are the caller's to collect. A row of no partition (negative:
// written by a tool, such as lockbench's seeds, never by a grant) has no
// relay: what the command does to it stays under the command's partition.
func (a *applier) forLock(partition int32) *applier {
	b := a.Batch
	if partition >= 0 {
		b = b.For(partition)
	}
	return &applier{Batch: b, cmd: a.cmd, op: a.op, polledAt: a.polledAt}
}

// event starts an event of the current command showing in.
func (a *applier) event(typ string, r *lockRow, in rules.Info) *pending {
	ev := topics.NewEvent(typ, a.cmd.Operation, a.cmd.RequestID, r.now)
	ev.LockInfo = r.info(in)
	return &pending{ev: &ev, polledAt: a.polledAt}
}

// reply sends the command's own answer to its reply_to and stores it as the
// request's outcome.
func (a *applier) reply(p *pending) {
	a.emit(a.cmd.ReplyTo, a.cmd.Key(), p)
	a.remember(a.cmd.RequestID, a.cmd.ReplyTo, p)
	a.caused = append(a.caused, *p.ev)
}

// ended tells a holder that its lease ended without its asking (it ran out,
// was revoked, or its session ended): typ for operation op, with the
// reason, on its reply_to and the lifecycle topic, and in the history. The
// event has no request_id, as the lease's end is nobody's answer: only the
// revoker's own answer carries the revoke's, so a requester that revokes a
// lease it holds itself still finds its answer by request_id.
func (a *applier) ended(r *lockRow, typ, op, reason string, in rules.Info, holderReplyTo string) {
	ev := topics.NewEvent(typ, op, "", r.now)
	ev.LockInfo, ev.Reason = r.info(in), reason
	p := &pending{ev: &ev}
	a.notify(p, holderReplyTo)
	a.recordHistory(p.ev)
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
	if a.env.NoHistory {
		return
	}
	li := ev.LockInfo
	a.history = append(a.history, historyRow{
		eventID: ev.EventID, namespace: li.Namespace, lockName: li.LockName,
		typ: ev.Type, owner: li.OwnerID, token: li.FencingToken, at: ev.OccurredAt.Time,
	})
}

// answer sends the event of another request than the command's (a waiter's
// final answer) to its reply_to and stores it as that request's outcome.
func (a *applier) answer(typ, op, requestID, replyTo string, r *lockRow, in rules.Info, mod func(*topics.Event)) *pending {
	ev := topics.NewEvent(typ, op, requestID, r.now)
	ev.LockInfo = r.info(in)
	if mod != nil {
		mod(&ev)
	}
	p := &pending{ev: &ev}
	a.emit(replyTo, topics.LockKey(r.namespace, r.name), p)
	a.remember(requestID, replyTo, p)
	a.caused = append(a.caused, ev)
	return p
}

// apply writes what the rules decided (effs, in order) and sends their
// events: one round trip for the writes, whatever their number.
func (a *applier) apply(ctx context.Context, s *lockState, effs []rules.Effect) error {
	if s.err != nil {
		return s.err
	}
	r, l := s.row, s.l
	// A lock-delay that started, or passed and was cleared, is a change too.
	changed := slices.ContainsFunc(effs, func(e rules.Effect) bool { return e.Kind != rules.Refuse }) ||
		(r.delayUntil == nil) != l.DelayUntil.IsZero()
	if changed {
		r.revision++
	}
	pb := &pgx.Batch{}
	if a.writes != nil {
		pb = &a.writes.batch
	}
	leases := false
	// held: a holder row of the lock was written above, so that a holder's
	// delete after it keeps its place rather than going ahead of it
	// (lockWrites). No decision does so yet: every lease a decision ends is
	// ended before it grants (rules: settleExpired and endLeases, then
	// HandOff).
	held := false
	var partition *int32
	for _, e := range effs {
		h, w := e.Holder, e.Waiter
		switch e.Kind {
		case rules.Grant:
			held = true
			if w.ID != 0 {
				pb.Queue(`DELETE FROM lock_waiters WHERE id = $1`, w.ID)
			}
			pb.Queue(`INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at,
					lease_duration, owner_metadata, reply_to, request_id, source_partition, session_id, lock_delay, max_hold)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, nullif($10, ''), nullif($11, ''), $12, nullif($13, ''), $14, $15)`,
				r.namespace, r.name, h.Owner, h.Mode, h.Token, h.AcquiredAt, ownExpiry(h), h.Lease, metadata(h.Metadata),
				h.ReplyTo, h.RequestID, h.Partition, h.Session, h.LockDelay, h.MaxHold)
			partition = &h.Partition
			leases = true
			ev := topics.NewEvent(topics.TypeAcquired, topics.OpAcquire, h.RequestID, r.now)
			ev.LockInfo = r.info(e.Info)
			p := &pending{ev: &ev}
			a.recordHistory(p.ev)
			if w.ID == 0 {
				p.polledAt = a.polledAt
				a.reply(p)
				a.emit(a.env.Names.Acquired, a.cmd.Key(), p)
			} else {
				a.notify(p, w.ReplyTo)
				a.remember(w.RequestID, w.ReplyTo, p)
			}
		case rules.Renew:
			held = true
			pb.Queue(`UPDATE lock_holders SET expires_at = $4, reply_to = nullif($5, ''), session_id = nullif($6, '')
				WHERE namespace = $1 AND lock_name = $2 AND owner_id = $3`,
				r.namespace, r.name, h.Owner, ownExpiry(h), h.ReplyTo, h.Session)
			leases = true
			a.reply(a.event(topics.TypeAcquired, r, e.Info))
		case rules.Queue:
			pb.Queue(`INSERT INTO lock_waiters (namespace, lock_name, owner_id, mode, request_id, lease_duration, owner_metadata, reply_to, deadline,
					source_partition, session_id, lock_delay, max_hold)
				VALUES ($1, $2, $3, $4, $5, $6, $7, nullif($8, ''), $9, $10, nullif($11, ''), $12, $13)`,
				r.namespace, r.name, w.Owner, w.Mode, w.RequestID, w.Lease, metadata(w.Metadata), w.ReplyTo, w.Deadline, w.Partition, w.Session,
				w.LockDelay, w.MaxHold)
			p := a.event(topics.TypeQueued, r, e.Info)
			p.ev.QueuePosition = e.Position
			a.reply(p)
		case rules.Requeue:
			pb.Queue(`UPDATE lock_waiters SET mode = $2, request_id = $3, lease_duration = $4, owner_metadata = $5, reply_to = nullif($6, ''),
					deadline = $7, source_partition = $8, session_id = nullif($9, ''), lock_delay = $10, max_hold = $11 WHERE id = $1`,
				w.ID, w.Mode, w.RequestID, w.Lease, metadata(w.Metadata), w.ReplyTo, w.Deadline, w.Partition, w.Session, w.LockDelay, w.MaxHold)
			a.answer(topics.TypeWithdrawn, topics.OpAcquire, e.Prev.RequestID, e.Prev.ReplyTo, r, e.Info, nil)
			p := a.event(topics.TypeQueued, r, e.Info)
			p.ev.QueuePosition = e.Position
			a.reply(p)
		case rules.Withdraw:
			pb.Queue(`DELETE FROM lock_waiters WHERE id = $1`, w.ID)
			a.reply(a.event(topics.TypeWithdrawn, r, e.Info))
			// The waiting acquire gets its own final answer, as when an
			// acquire takes its place (requeue): the process waiting on it
			// may not be the one that sent the release.
			a.answer(topics.TypeWithdrawn, topics.OpAcquire, w.RequestID, w.ReplyTo, r, e.Info, nil)
		case rules.Timeout:
			pb.Queue(`DELETE FROM lock_waiters WHERE id = $1`, w.ID)
			a.answer(topics.TypeRejected, topics.OpAcquire, w.RequestID, w.ReplyTo, r, e.Info, func(ev *topics.Event) {
				ev.ErrorCode = topics.CodeLockTimeout
				ev.ErrorMessage = "wait_timeout passed before the lock became free"
			})
		case rules.Lose:
			a.deleteHolder(pb, r, h.Owner, held)
			leases = true
			a.lost(r, e)
		case rules.Drop:
			pb.Queue(`DELETE FROM lock_waiters WHERE id = $1`, w.ID)
			a.dropped(r, e)
		case rules.Expire, rules.Release, rules.Revoke:
			a.deleteHolder(pb, r, h.Owner, held)
			leases = true
			switch e.Kind {
			case rules.Expire:
				a.ended(r, topics.TypeExpired, topics.OpExpire, "", e.Info, h.ReplyTo)
			case rules.Release:
				a.released(r, e.Info, h.ReplyTo)
			default:
				a.ended(r, topics.TypeRevoked, topics.OpRevoke, a.cmd.Reason, e.Info, h.ReplyTo)
			}
		case rules.Extend:
			held = true
			pb.Queue(`UPDATE lock_holders SET expires_at = $4, extension_count = $5 WHERE namespace = $1 AND lock_name = $2 AND owner_id = $3`,
				r.namespace, r.name, h.Owner, h.ExpiresAt, h.Extensions)
			a.extended(r, e.Info) // updated_at stays: only a lock nobody holds is ever idle
		case rules.Refuse:
			p := a.event(topics.TypeRejected, r, e.Info)
			p.ev.ErrorCode, p.ev.ErrorMessage = e.Code, e.Message
			if e.Code == topics.CodeLockHeld {
				s := float64((e.RetryAfter+time.Millisecond-1)/time.Millisecond) / 1000 // up to the wire's milliseconds: never early
				p.ev.RetryAfterSeconds = &s
			}
			a.reply(p)
		}
	}
	if !changed {
		return nil
	}
	row := lockRowValues(r, l, partition, leases)
	if a.writes != nil {
		a.writes.rows.add(row...)
	} else {
		pb.Queue(updateLockRowSQL, row...)
	}
	a.state(r, l, len(l.Holders), lockStatus(r, l))
	if a.writes != nil {
		return nil
	}
	if err := a.tx.SendBatch(ctx, pb).Close(); err != nil {
		return fmt.Errorf("writing lock %q: %w", topics.LockKey(r.namespace, r.name), err)
	}
	return nil
}

// lockRowValues are the values of the update of the locks row to what l
// is now, in updateLockRowSQL's order ($1 and $2 the key). The grantee's
// partition (nil: no grant) becomes the row's; leases says a lease
// changed, which is what updated_at records (cleanup deletes the rows idle
// since max_age_seconds).
func lockRowValues(r *lockRow, l *rules.Lock, partition *int32, leases bool) []any {
	status, shared := lockStatus(r, l), 0
	for _, h := range l.Holders {
		if h.Mode == rules.Shared {
			shared++
		}
	}
	var delayUntil *time.Time
	if !l.DelayUntil.IsZero() {
		delayUntil = &l.DelayUntil
	}
	var ended rules.Holder
	var endedOwner, endedMode *string
	var endedAt, endedUntil *time.Time
	if l.Ended != nil {
		ended = *l.Ended
		endedOwner, endedMode, endedAt, endedUntil = &ended.Owner, (*string)(&ended.Mode), &ended.AcquiredAt, &ended.ExpiresAt
	}
	return []any{r.namespace, r.name, status, l.Limit, len(l.Holders), shared, l.Waiting, l.Acquisitions,
		endedOwner, endedMode, ended.Token, endedAt, endedUntil, ended.Lease, metadata(ended.Metadata), ended.Extensions,
		partition, leases, r.now, r.revision, delayUntil}
}

// lockRowSet is the SET list of a locks row's update, v(n) the nth of
// lockRowValues (from 3; 1 and 2 are the key), so that the update of one
// row and that of many (lockRowTypes) set the same. The token's cast keeps
// it an int8 where v is a bare parameter, which nullif's literal 0 alone
// would type as an int4, refusing every token past 2^31.
func lockRowSet(v func(n int) string) string {
	return `status = ` + v(3) + `, lock_limit = ` + v(4) + `, holder_count = ` + v(5) + `, shared_count = ` + v(6) +
		`, waiter_count = ` + v(7) + `, acquisition_count = ` + v(8) + `, ended_owner_id = ` + v(9) + `, ended_mode = ` + v(10) +
		`, ended_fencing_token = nullif(` + v(11) + `::int8, 0), ended_acquired_at = ` + v(12) + `, ended_expires_at = ` + v(13) +
		`, ended_lease_duration = ` + v(14) + `, ended_owner_metadata = ` + v(15) + `, ended_extension_count = ` + v(16) +
		`, source_partition = coalesce(` + v(17) + `, source_partition), updated_at = CASE WHEN ` + v(18) + ` THEN ` + v(19) +
		`::timestamptz ELSE updated_at END, revision = ` + v(20) + `, delay_until = ` + v(21)
}

// lockRowTypes are the types of lockRowValues, for the arrays of the
// update of many rows.
var lockRowTypes = []string{"text", "text", "text", "int", "int", "int", "int", "int8", "text", "text", "int8", "timestamptz",
	"timestamptz", "float8", "jsonb", "int8", "int", "bool", "timestamptz", "int8", "timestamptz"}

// updateLockRowSQL updates one locks row to lockRowValues.
var updateLockRowSQL = `UPDATE locks SET ` + lockRowSet(func(n int) string { return "$" + strconv.Itoa(n) }) + `
	WHERE namespace = $1 AND lock_name = $2`

// deleteHolderSQL deletes one lease: $1 and $2 its lock's key, $3 its owner.
const deleteHolderSQL = `DELETE FROM lock_holders WHERE namespace = $1 AND lock_name = $2 AND owner_id = $3`

// deleteHolder deletes owner's lease of r's lock: with the other locks'
// leases, ahead of their writes (lockWrites), unless held (a holder row of
// the lock was written before it: the delete keeps its place).
func (a *applier) deleteHolder(pb *pgx.Batch, r *lockRow, owner string, held bool) {
	if a.writes != nil && !held {
		a.writes.ended.add(r.namespace, r.name, owner)
		return
	}
	pb.Queue(deleteHolderSQL, r.namespace, r.name, owner)
}

// lockStatus is the locks row's status once l is written.
func lockStatus(r *lockRow, l *rules.Lock) string {
	switch {
	case len(l.Holders) > 0:
		return topics.StatusAcquired
	case l.Ended != nil:
		return string(l.EndedStatus)
	}
	return r.status
}

// released answers the release of a lease. A holder released from another
// reply_to is told on its own.
func (a *applier) released(r *lockRow, in rules.Info, holderReplyTo string) {
	p := a.event(topics.TypeReleased, r, in)
	a.reply(p)
	if holderReplyTo != a.cmd.ReplyTo {
		a.emit(holderReplyTo, a.cmd.Key(), p)
	}
	a.emit(a.env.Names.Released, a.cmd.Key(), p)
	a.recordHistory(p.ev)
}

// extended answers the extend of a lease.
func (a *applier) extended(r *lockRow, in rules.Info) {
	p := a.event(topics.TypeExtended, r, in)
	a.reply(p)
	a.recordHistory(p.ev)
}

// metadata stores an absent or null owner_metadata as SQL NULL (a null
// with spaces around too, which a Go caller may pass: jsonb would store it
// as a JSON null on one path and SQL NULL on the other).
func metadata(m []byte) []byte {
	if t := bytes.TrimSpace(m); len(t) == 0 || string(t) == "null" {
		return nil
	}
	return m
}
