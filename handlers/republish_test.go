package handlers_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// RepublishStates publishes the current state of every lock again, in
// pages in key order, at its revision unchanged, with its holders, each
// under the lock's partition; a row of no partition (negative, seeded by a
// tool) under the batch's, whose relay sends it.
func TestRepublishStates(t *testing.T) {
	h := newHarness(t)
	h.apply(h.acquire("a", "x", lease(60)), h.acquire("a", "y", wait(60)), h.acquire("b", "z"), h.acquire("c", "w"))
	h.apply(h.release("c", "w"))
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE locks SET source_partition = CASE lock_name WHEN 'b' THEN -1 ELSE 3 END`)
	require.NoError(t, err)
	h.clearOutbox()
	env := h.env
	env.Partition = 7
	var after handlers.StateKey
	page := func() int {
		var keys, skipped []handlers.StateKey
		require.NoError(t, h.st.InTx(context.Background(), func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, env)
			var err error
			if keys, skipped, _, err = b.RepublishStates(context.Background(), after, 2); err != nil {
				return err
			}
			return b.Flush(context.Background())
		}))
		require.Empty(t, skipped)
		if len(keys) > 0 {
			after = keys[len(keys)-1]
		}
		return len(keys)
	}
	require.Equal(t, 2, page())
	require.Equal(t, handlers.StateKey{Name: "b"}, after, "the page's last key")
	require.Equal(t, 1, page())
	require.Equal(t, 0, page())
	require.Equal(t, []string{
		"a rev=2 acquired [x]/1 waiters=1 by=republish",
		"b rev=1 acquired [z]/1 waiters=0 by=republish",
		"c rev=2 released []/0 waiters=0 by=republish",
	}, stateLines(h.states()))
	rows, err := h.st.Pool.Query(context.Background(), `SELECT convert_from(key, 'UTF8') || ' ' || source_partition FROM outbox ORDER BY id`)
	require.NoError(t, err)
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"a 3", "b 7", "c 3"}, parts, "the lock's partition; the batch's for a row of none")
}

// stateLines shows lock state records, a tombstone as the key alone.
func stateLines(recs []stateRecord) []string {
	var out []string
	for _, s := range recs {
		st := s.State
		if st == nil {
			out = append(out, s.Key+" tombstone")
			continue
		}
		var hs []string
		for _, x := range st.Holders {
			hs = append(hs, x.OwnerID)
		}
		out = append(out, fmt.Sprintf("%s rev=%d %s %v/%d waiters=%d by=%s", s.Key, st.Revision, st.Status, hs, st.HolderCount, st.WaiterCount, st.Operation))
	}
	return out
}

// republishAll publishes every lock's state again as a worker does
// (worker.Worker.RepublishStates): pages of limit locks, each in a
// transaction, each followed by the keys it skipped, each alone in a
// transaction of its own. Unlike the worker's, its transactions are not
// retried, so that a deadlock shows. It asserts nothing, so any goroutine
// may call it.
func (h *harness) republishAll(ctx context.Context, limit int) error {
	inTx := func(step func(*handlers.Batch) error) error {
		return pgx.BeginFunc(ctx, h.st.Pool, func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, h.env)
			if err := step(b); err != nil {
				return err
			}
			return b.Flush(ctx)
		})
	}
	var after handlers.StateKey
	for {
		var keys, skipped []handlers.StateKey
		if err := inTx(func(b *handlers.Batch) error {
			var err error
			keys, skipped, _, err = b.RepublishStates(ctx, after, limit)
			return err
		}); err != nil {
			return err
		}
		for _, k := range skipped {
			if err := inTx(func(b *handlers.Batch) error {
				_, err := b.RepublishState(ctx, k)
				return err
			}); err != nil {
				return err
			}
		}
		if len(keys) < limit {
			return nil
		}
		after = keys[len(keys)-1]
	}
}

// A republish beside a live batch: the batch holds b's row (its release)
// and its next command is on a. The page skips b rather than wait for it
// while holding a (a cycle: 40P01 after deadlock_timeout, the batch stalled
// a second), and publishes b alone after, waiting for the batch, whose
// change it publishes again after the batch's own record.
func TestRepublishStatesBesideABatch(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("a", "o1")).Type)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("b", "o1")).Type)
	h.clearOutbox()

	batch, batchPID := h.openTx()
	_, err := h.applyIn(ctx, batch, h.release("b", "o1"))
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- h.republishAll(ctx, 1000) }()
	h.waitBlockedBy(batchPID) // b's own transaction (before the fix: the page, holding a)

	poll := h.acquire("a", "o2")
	evs, err := h.applyIn(ctx, batch, poll)
	require.NoError(t, err, "the batch's command on a: no deadlock")
	require.Equal(t, topics.TypeRejected, answerTo(t, poll, evs).Type)
	require.NoError(t, batch.Commit(ctx))
	require.NoError(t, <-done, "the republish: no deadlock")
	require.Equal(t, []string{
		"b rev=2 released []/0 waiters=0 by=release",
		"a rev=1 acquired [o1]/1 waiters=0 by=republish",
		"b rev=2 released []/0 waiters=0 by=republish",
	}, stateLines(h.states()))
}

// The rows a page skips are each published once, after the transaction
// that held them commits, with the state it left, as a republish that
// skipped none publishes them: a page of rows all held (the next page
// starts after it), a row held by a refused command (no state of its own),
// and one a cleanup deletes (published by none: its tombstone is the
// cleanup's).
func TestRepublishStatesSkipped(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	for _, l := range []string{"a", "b", "c", "d", "e", "f"} {
		require.Equal(t, topics.TypeAcquired, h.one(h.acquire(l, "o1")).Type)
	}
	require.Equal(t, topics.TypeReleased, h.one(h.release("e", "o1")).Type)
	h.clearOutbox()

	releases, releasesPID := h.openTx() // holds the page c, d
	_, err := h.applyIn(ctx, releases, h.release("c", "o1"), h.release("d", "o1"))
	require.NoError(t, err)
	cleanup, cleanupPID := h.openTx() // holds e, deleted
	clean := h.cleanup("e", maxAge(0))
	evs, err := h.applyIn(ctx, cleanup, clean)
	require.NoError(t, err)
	require.Equal(t, []string{"e"}, answerTo(t, clean, evs).CleanedLockNames)
	refused, refusedPID := h.openTx() // holds f, unchanged
	poll := h.acquire("f", "o2")
	evs, err = h.applyIn(ctx, refused, poll)
	require.NoError(t, err)
	require.Equal(t, topics.TypeRejected, answerTo(t, poll, evs).Type)

	done := make(chan error, 1)
	go func() { done <- h.republishAll(ctx, 2) }()
	for _, holder := range []struct {
		tx  pgx.Tx
		pid int64
	}{{releases, releasesPID}, {cleanup, cleanupPID}, {refused, refusedPID}} {
		h.waitBlockedBy(holder.pid) // a skipped key published alone
		require.NoError(t, holder.tx.Commit(ctx))
	}
	require.NoError(t, <-done)
	require.Equal(t, []string{
		"c rev=2 released []/0 waiters=0 by=release",
		"d rev=2 released []/0 waiters=0 by=release",
		"e tombstone",
		"a rev=1 acquired [o1]/1 waiters=0 by=republish",
		"b rev=1 acquired [o1]/1 waiters=0 by=republish",
		"c rev=2 released []/0 waiters=0 by=republish",
		"d rev=2 released []/0 waiters=0 by=republish",
		"f rev=1 acquired [o1]/1 waiters=0 by=republish",
	}, stateLines(h.states()))
	republished := stateLines(h.states())[3:]

	h.clearOutbox()
	require.NoError(t, h.republishAll(ctx, 2))
	require.Equal(t, republished, stateLines(h.states()), "as a republish that skipped none")
}
