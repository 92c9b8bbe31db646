package handlers_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// locksRows is the locks table as text, to show a query changed nothing.
func (h *harness) locksRows() string {
	return h.scalarText(`SELECT coalesce(json_agg(l ORDER BY namespace, lock_name), '[]')::text FROM locks l`)
}

func TestQuery(t *testing.T) {
	h := newHarness(t)

	t.Run("no row: free", func(t *testing.T) {
		cmd := h.query("nothing")
		ev := h.one(cmd)
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.True(t, ev.Success)
		require.Equal(t, topics.OpQuery, ev.Operation)
		require.Equal(t, topics.StatusFree, ev.LockInfo.Status)
		require.Equal(t, "nothing", ev.LockInfo.LockName)
		require.Empty(t, ev.LockInfo.OwnerID)
		require.Zero(t, ev.LockInfo.FencingToken)
		require.Zero(t, h.scalar(`SELECT count(*) FROM locks`), "a query creates no row")
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes())
		require.Equal(t, ev.EventID, h.outcome(cmd.RequestID).EventID, "the outcome is stored like any command's")
	})

	t.Run("held: holder info", func(t *testing.T) {
		acq := h.one(h.acquire("a", "alice", lease(20), ns("t1"), func(c *topics.Command) { c.OwnerMetadata = []byte(`{"pid":7}`) }))
		h.one(h.extend("a", "alice", ns("t1"), extendBy(5)))
		h.one(h.acquire("a", "bob", ns("t1"), wait(30)))
		h.clearOutbox()
		before := h.locksRows()
		q := h.query("a")
		q.Namespace = "t1"
		ev := h.one(q)
		li := ev.LockInfo
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.Equal(t, topics.StatusAcquired, li.Status)
		require.Equal(t, "t1", li.Namespace)
		require.Equal(t, "alice", li.OwnerID)
		require.Equal(t, acq.LockInfo.FencingToken, li.FencingToken)
		require.Equal(t, acq.LockInfo.AcquiredAt, li.AcquiredAt)
		require.Equal(t, acq.LockInfo.ExpiresAt.Add(5e9), li.ExpiresAt.Time)
		require.Equal(t, 20.0, li.LeaseDuration)
		require.Equal(t, int64(1), li.AcquisitionCount)
		require.Equal(t, int64(1), li.ExtensionCount)
		require.JSONEq(t, `{"pid":7}`, string(li.OwnerMetadata))
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes())
		require.Equal(t, "t1/a", h.outbox()[0].Key)
		require.Equal(t, before, h.locksRows())

		// The lock of the same name in another namespace is another lock.
		require.Equal(t, topics.StatusFree, h.one(h.query("a")).LockInfo.Status)
	})

	t.Run("released", func(t *testing.T) {
		h.one(h.acquire("r", "alice"))
		h.one(h.release("r", "alice"))
		ev := h.one(h.query("r"))
		require.Equal(t, topics.StatusReleased, ev.LockInfo.Status)
		require.Equal(t, "alice", ev.LockInfo.OwnerID)
	})

	t.Run("lease past expires_at: expired before anything ended it, and nothing written to locks", func(t *testing.T) {
		acq := h.one(h.acquire("e", "erin", lease(60)))
		h.one(h.acquire("e", "fred", wait(30)))
		h.endLeases(`owner_id = 'erin'`) // fred queued behind it first
		h.clearOutbox()
		before := h.locksRows()
		history := h.scalar(`SELECT count(*) FROM lock_events`)

		cmd := h.query("e")
		ev := h.one(cmd)
		require.Equal(t, topics.StatusExpired, ev.LockInfo.Status)
		require.Equal(t, "erin", ev.LockInfo.OwnerID)
		require.Equal(t, acq.LockInfo.FencingToken, ev.LockInfo.FencingToken)

		require.Equal(t, before, h.locksRows(), "query is read-only")
		require.Equal(t, "acquired", h.scalarText(`SELECT status FROM locks WHERE lock_name = 'e'`))
		require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_waiters WHERE lock_name = 'e'`), "the waiter is not granted by a query")
		require.Equal(t, history, h.scalar(`SELECT count(*) FROM lock_events`))
		require.Equal(t, []string{"locks.replies.q lock.status"}, h.routes(), "no lock.expired, no grant: only the reply")
		require.Equal(t, topics.StatusExpired, h.outcome(cmd.RequestID).LockInfo.Status)

		// The next command that locks the row settles it.
		require.Equal(t, 1, h.expireDue())
		require.Equal(t, "fred", h.one(h.query("e")).LockInfo.OwnerID)
	})

	t.Run("without reply_to: no outbox row, outcome still stored", func(t *testing.T) {
		h.clearOutbox()
		cmd := h.query("a")
		cmd.ReplyTo = ""
		ev := h.one(cmd)
		require.Equal(t, topics.TypeStatus, ev.Type)
		require.Empty(t, h.routes())
		require.Equal(t, ev.EventID, h.outcome(cmd.RequestID).EventID)
	})
}

// A status lists as many holders as fit in topics.MaxHoldersBytes, so that
// a semaphore of many holders with large owner_metadata is still answered
// within Kafka's default 1 MiB record; holder_count counts them all.
func TestQueryHoldersFitARecord(t *testing.T) {
	h := newHarness(t)
	meta := []byte(`{"k":"` + strings.Repeat("x", topics.MaxOwnerMetadataBytes-10) + `"}`)
	const n = 300
	cmds := make([]topics.Command, n)
	for i := range cmds {
		cmds[i] = h.acquire("sem", fmt.Sprintf("o%03d", i), limit(n), func(c *topics.Command) { c.OwnerMetadata = meta })
	}
	h.apply(cmds...)
	ev := h.one(h.query("sem"))
	require.Equal(t, n, ev.LockInfo.HolderCount)
	require.Less(t, len(ev.LockInfo.Holders), n)
	require.Greater(t, len(ev.LockInfo.Holders), 100)
	require.Equal(t, "o000", ev.LockInfo.Holders[0].OwnerID, "the first in grant order")
	v, err := ev.Encode()
	require.NoError(t, err)
	require.Less(t, len(v), 1<<20, "fits Kafka's default record size")
}
