package handlers

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers/rules"
	"github.com/omninode/lockworker/topics"
)

// state publishes the lock as the current change leaves it (r's revision,
// its holders, of which l holds at least the first topics.MaxStateHolders,
// and l's queue) to the lock state topic, after the change's
// events: the relay sends a key's rows in outbox order, which for one lock
// is commit order (its row lock orders the transactions that change it).
// It returns the record (nil without a state topic).
func (a *applier) state(r *lockRow, l *rules.Lock, holders int, status string) *topics.LockState {
	if a.env.Names.State == "" {
		return nil
	}
	op := a.cmd.Operation
	if op == "" {
		op = topics.OpExpire // the expiry scheduler's change
	}
	hs := holderList(l, topics.MaxStateHolders)
	if hs == nil {
		hs = []topics.Holder{}
	}
	st := &topics.LockState{
		Namespace: r.namespace, LockName: r.name, Revision: r.revision, Status: status, Limit: l.Limit,
		HolderCount: holders, Holders: hs, WaiterCount: l.Waiting, AcquisitionCount: l.Acquisitions,
		Operation: op, ChangedAt: topics.NewTime(r.now),
	}
	if l.DelayUntil.After(r.now) {
		st.DelayUntil = topics.NewTimePtr(l.DelayUntil)
	}
	a.queueState(r.namespace, r.name, &pending{state: st})
	return st
}

// deleted publishes the tombstone of a lock whose row cleanup deleted,
// under the lock's partition (see sweep).
func (a *applier) deleted(ns, name string, partition int32) {
	if a.env.Names.State != "" {
		a.forLock(partition).queueState(ns, name, &pending{})
	}
}

// changedState publishes the state a common case left its lock in; held
// says whether the command's owner still holds it. When others hold it
// too, their list is left for readStates, which reads it once per lock at
// the end of the transaction: only the transaction's last record of a lock
// is published (queueState), and by then the lock's holders are what that
// last change left (the transaction sees its own writes).
func (a *applier) changedState(ch *changed, held bool) {
	if a.env.Names.State == "" {
		return
	}
	r := ch.row
	l := &rules.Lock{Limit: r.limit, Waiting: r.waiters, Acquisitions: r.acquisitions, Now: r.now}
	status := topics.StatusAcquired
	switch {
	case r.holders == 0:
		status = topics.StatusReleased
	case r.holders == 1 && held:
		l.Holders = []rules.Holder{ch.holder}
	}
	st := a.state(r, l, r.holders, status)
	if r.holders > len(l.Holders) {
		a.unread = append(a.unread, unreadState{st: st, namespace: r.namespace, name: r.name, now: r.now})
	}
}

// unreadState is a lock state record whose holders are still to be read.
type unreadState struct {
	st              *topics.LockState
	namespace, name string
	now             time.Time
}

// readStates reads, in one round trip, the holders of the lock state
// records the common cases left without them (changedState) that the
// transaction publishes (QueueFlush).
func (b *Batch) readStates(ctx context.Context) error {
	if len(b.unread) == 0 {
		return nil
	}
	published := map[*topics.LockState]bool{}
	for _, r := range b.outbox {
		if r.p.state != nil && !r.superseded {
			published[r.p.state] = true
		}
	}
	pb := &pgx.Batch{}
	read := make([][]rules.Holder, len(b.unread))
	for i, u := range b.unread {
		if published[u.st] {
			queueHolders(pb, u.namespace, u.name, topics.MaxStateHolders, &read[i])
		}
	}
	if pb.Len() > 0 {
		if err := b.tx.SendBatch(ctx, pb).Close(); err != nil {
			return fmt.Errorf("reading the holders of lock states: %w", err)
		}
	}
	for i, u := range b.unread {
		if hs := holderList(&rules.Lock{Holders: read[i], Now: u.now}, topics.MaxStateHolders); hs != nil {
			u.st.Holders = hs
		}
	}
	b.unread = nil
	return nil
}

// OpFirstState is the operation of the first state record of a lock that
// existed before revisions did (migration 009).
const OpFirstState = "first_state"

// PublishFirstStates gives at most limit locks without a revision (rows
// from before migration 009), the first after the lock after in key order,
// their first and publishes their state, each under its own partition
// (forLock: a row of no partition, seeded by a tool, under b's). It returns
// how many it did and the last one's key, which the next page starts after
// (fewer than limit: the last page): the pages of a start read the table
// once, along its primary key. The page's revisions and its held locks'
// holders take one round trip. Rows another transaction holds are skipped
// and not come back to: another replica starting together does them, and a
// command that changes the lock gives it revision 1 (revision + 1) and
// publishes its state; one that changes nothing (a refusal) leaves it to
// its next change or the next start.
func (b *Batch) PublishFirstStates(ctx context.Context, after StateKey, limit int) (int, StateKey, error) {
	if after == (StateKey{}) {
		// Every start but the first after the upgrade finds none: a scan of
		// the heap, which stops at the first, tells it sooner than a walk of
		// the primary key, which fetches every row in key order.
		var some bool
		if err := b.tx.QueryRow(ctx, `SELECT EXISTS (SELECT FROM locks WHERE revision = 0)`).Scan(&some); err != nil {
			return 0, StateKey{}, fmt.Errorf("looking for locks without a revision: %w", err)
		}
		if !some {
			return 0, StateKey{}, nil
		}
	}
	rows, err := b.tx.Query(ctx, `SELECT `+lockCols+` FROM locks WHERE (namespace, lock_name) > ($1, $2) AND revision = 0
		ORDER BY namespace, lock_name LIMIT $3 FOR UPDATE SKIP LOCKED`, after.Namespace, after.Name, limit)
	if err != nil {
		return 0, StateKey{}, fmt.Errorf("finding locks without a revision: %w", err)
	}
	var rs []lockRow
	var r lockRow
	if _, err := pgx.ForEachRow(rows, r.dest(), func() error { rs = append(rs, r); return nil }); err != nil {
		return 0, StateKey{}, fmt.Errorf("finding locks without a revision: %w", err)
	}
	if len(rs) == 0 {
		return 0, StateKey{}, nil
	}
	pb := &pgx.Batch{}
	nss, names := make([]string, len(rs)), make([]string, len(rs))
	for i := range rs {
		nss[i], names[i] = rs[i].namespace, rs[i].name
	}
	pb.Queue(`UPDATE locks l SET revision = 1 FROM unnest($1::text[], $2::text[]) AS k(ns, nm)
		WHERE l.namespace = k.ns AND l.lock_name = k.nm`, nss, names)
	read := make([][]rules.Holder, len(rs))
	for i := range rs {
		rs[i].scanned()
		if rs[i].holders > 0 {
			queueHolders(pb, rs[i].namespace, rs[i].name, topics.MaxStateHolders, &read[i])
		}
	}
	if err := b.tx.SendBatch(ctx, pb).Close(); err != nil {
		return 0, StateKey{}, fmt.Errorf("giving %d locks their first revision: %w", len(rs), err)
	}
	for i := range rs {
		r := &rs[i]
		r.revision = 1
		a := (&applier{Batch: b, cmd: topics.Command{Operation: OpFirstState}}).forLock(r.partition)
		l := r.lock()
		l.Holders = read[i]
		a.state(r, l, r.holders, r.status)
	}
	last := rs[len(rs)-1]
	return len(rs), StateKey{last.namespace, last.name}, nil
}

// OpRepublish is the operation of a lock state record published again,
// unchanged but for its changed_at (the time it was published again), by
// a worker that found at its start that the lock state topic's partition
// count or topic ID changed (see docs/design.md "Lock state topic").
const OpRepublish = "republish"

// StateKey names a lock whose state RepublishStates publishes again.
type StateKey struct{ Namespace, Name string }

// RepublishStates publishes again the current state of a page of locks
// with a revision, the first limit after the lock after in key order, each
// under its own partition (forLock: a row of no partition, seeded by a
// tool, under b's). It returns the page's keys (fewer than limit: the last
// page; the next one starts after the last), how many it published (rows
// made or given their first revision in the page's range since it was
// listed too), and the keys of the rows another transaction held, which it
// skipped: waiting for one while holding the page's rows would close a
// cycle with a batch, which locks its rows in command order (40P01 after
// deadlock_timeout, the batch waiting meanwhile). The caller publishes
// each of them alone (RepublishState): the holder may be a refused
// command, which publishes no state. Their
// revision is unchanged: a reader that has it drops the copy. Locks still
// at revision 0 are PublishFirstStates's.
func (b *Batch) RepublishStates(ctx context.Context, after StateKey, limit int) (keys, skipped []StateKey, published int, err error) {
	rows, err := b.tx.Query(ctx, `SELECT namespace, lock_name FROM locks WHERE revision > 0 AND (namespace, lock_name) > ($1, $2)
		ORDER BY namespace, lock_name LIMIT $3`, after.Namespace, after.Name, limit)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("listing the locks to publish again: %w", err)
	}
	if keys, err = pgx.CollectRows(rows, pgx.RowToStructByPos[StateKey]); err != nil {
		return nil, nil, 0, fmt.Errorf("listing the locks to publish again: %w", err)
	}
	if len(keys) == 0 {
		return nil, nil, 0, nil
	}
	got, err := b.republish(ctx, keys[0], keys[len(keys)-1], ` SKIP LOCKED`)
	if err != nil {
		return nil, nil, 0, err
	}
	for _, k := range keys {
		if !got[k] {
			skipped = append(skipped, k)
		}
	}
	return keys, skipped, len(got), nil
}

// RepublishState publishes again the current state of the lock k, one
// RepublishStates skipped, waiting for its row: called in a transaction of
// its own, which holds no other row, the wait closes no cycle. It says
// whether it did (not: the row was deleted meanwhile).
func (b *Batch) RepublishState(ctx context.Context, k StateKey) (bool, error) {
	got, err := b.republish(ctx, k, k, ``)
	return got[k], err
}

// republishLocking locks the rows with a revision of the locks from $1/$2
// to $3/$4 in key order.
const republishLocking = `SELECT ` + lockFields + ` FROM locks WHERE revision > 0
	AND (namespace, lock_name) >= ($1, $2) AND (namespace, lock_name) <= ($3, $4) ORDER BY namespace, lock_name FOR UPDATE`

// republish publishes again the current state of the locks with a
// revision from the lock from to the lock to in key order, and returns
// their keys. Their rows are locked (FOR UPDATE, then skip) while their
// state is read and published, so a change committed meanwhile is
// published after, in outbox order. The holders are read in one round trip.
func (b *Batch) republish(ctx context.Context, from, to StateKey, skip string) (map[StateKey]bool, error) {
	rows, err := b.tx.Query(ctx, timedAfterLock(republishLocking+skip), from.Namespace, from.Name, to.Namespace, to.Name)
	if err != nil {
		return nil, fmt.Errorf("reading the locks to publish again: %w", err)
	}
	var rs []lockRow
	var r lockRow
	if _, err := pgx.ForEachRow(rows, r.dest(), func() error { rs = append(rs, r); return nil }); err != nil {
		return nil, fmt.Errorf("reading the locks to publish again: %w", err)
	}
	pb := &pgx.Batch{}
	read := make([][]rules.Holder, len(rs))
	for i := range rs {
		rs[i].scanned()
		if rs[i].holders > 0 {
			queueHolders(pb, rs[i].namespace, rs[i].name, topics.MaxStateHolders, &read[i])
		}
	}
	if pb.Len() > 0 {
		if err := b.tx.SendBatch(ctx, pb).Close(); err != nil {
			return nil, fmt.Errorf("reading the holders of the locks to publish again: %w", err)
		}
	}
	got := make(map[StateKey]bool, len(rs))
	for i := range rs {
		r := &rs[i]
		a := (&applier{Batch: b, cmd: topics.Command{Operation: OpRepublish}}).forLock(r.partition)
		l := r.lock()
		l.Holders = read[i]
		a.state(r, l, r.holders, r.status)
		got[StateKey{r.namespace, r.name}] = true
	}
	return got, nil
}
