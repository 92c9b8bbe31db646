package handlers_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func TestExtend(t *testing.T) {
	h := newHarness(t)
	acq := h.one(h.acquire("a", "alice", lease(10)))
	li := acq.LockInfo
	h.clearOutbox()

	t.Run("default: by lease_duration, from the current expires_at", func(t *testing.T) {
		cmd := h.extend("a", "alice")
		ev := h.one(cmd)
		require.Equal(t, topics.TypeExtended, ev.Type)
		require.True(t, ev.Success)
		require.Equal(t, cmd.RequestID, ev.RequestID)
		require.Equal(t, topics.OpExtend, ev.Operation)
		require.Equal(t, li.FencingToken, ev.LockInfo.FencingToken, "the token stays")
		require.Equal(t, int64(1), ev.LockInfo.ExtensionCount)
		require.Equal(t, li.AcquisitionCount, ev.LockInfo.AcquisitionCount)
		require.Equal(t, li.ExpiresAt.Add(10*time.Second), ev.LockInfo.ExpiresAt.Time)
		require.Equal(t, li.AcquiredAt.Time, ev.LockInfo.AcquiredAt.Time)
		require.Equal(t, topics.StatusAcquired, ev.LockInfo.Status)
		require.Equal(t, []string{"locks.replies.alice lock.extended"}, h.routes(), "extend has no lifecycle topic")
	})

	t.Run("extension_duration, with the right fencing_token", func(t *testing.T) {
		h.clearOutbox()
		ev := h.one(h.extend("a", "alice", extendBy(2.5), token(li.FencingToken)))
		require.Equal(t, topics.TypeExtended, ev.Type)
		require.Equal(t, int64(2), ev.LockInfo.ExtensionCount)
		require.Equal(t, li.ExpiresAt.Add(12500*time.Millisecond), ev.LockInfo.ExpiresAt.Time)
		require.Equal(t, 10.0, ev.LockInfo.LeaseDuration, "lease_duration is the acquire's")
		require.Equal(t, "2 acquired", h.scalarText(`SELECT extension_count || ' ' || status FROM `+v1Locks+` WHERE lock_name = 'a'`))
		require.Equal(t, ev.LockInfo.ExpiresAt.Time, h.timeOf(`SELECT expires_at FROM `+v1Locks+` WHERE lock_name = 'a'`))
		require.Equal(t, []string{"lock.acquired alice", "lock.extended alice", "lock.extended alice"}, h.history("a"))
	})

	t.Run("a new grant starts counting extensions again", func(t *testing.T) {
		h.one(h.release("a", "alice"))
		ev := h.one(h.acquire("a", "bob"))
		require.Zero(t, ev.LockInfo.ExtensionCount)
		require.Equal(t, int64(2), ev.LockInfo.AcquisitionCount)
	})
}

func TestExtendErrors(t *testing.T) {
	cases := []refusalCase{
		{
			name: "after the lease ended: NOT_HELD, status expired",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice", lease(0.2)))
				h.waitPast(acq.LockInfo.ExpiresAt.Time)
				return h.extend("a", "alice", extendBy(60))
			},
			code: topics.CodeNotHeld, status: topics.StatusExpired, owner: "alice",
			routes: []string{"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired", "locks.replies.alice lock.rejected"},
		},
		{
			name: "another owner: NOT_OWNER",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice"))
				return h.extend("a", "bob")
			},
			code: topics.CodeNotOwner, status: topics.StatusAcquired, owner: "alice",
		},
		{
			name: "a waiting owner: NOT_OWNER, and it keeps waiting",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice"))
				h.one(h.acquire("a", "bob", wait(30)))
				return h.extend("a", "bob")
			},
			code: topics.CodeNotOwner, status: topics.StatusAcquired, owner: "alice",
		},
		{
			name: "wrong fencing_token: TOKEN_MISMATCH",
			setup: func(h *harness) topics.Command {
				acq := h.one(h.acquire("a", "alice"))
				return h.extend("a", "alice", token(acq.LockInfo.FencingToken+7))
			},
			code: topics.CodeTokenMismatch, status: topics.StatusAcquired, owner: "alice",
		},
		{
			name:   "no row: NOT_HELD, status free",
			setup:  func(h *harness) topics.Command { return h.extend("a", "alice") },
			code:   topics.CodeNotHeld,
			status: topics.StatusFree,
		},
		{
			name: "released: NOT_HELD",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice"))
				h.one(h.release("a", "alice"))
				return h.extend("a", "alice")
			},
			code: topics.CodeNotHeld, status: topics.StatusReleased, owner: "alice",
		},
	}
	type state struct {
		expires *time.Time // nil: no row
		waiters int64
	}
	runRefusals(t, cases, func(h *harness) state {
		var st state
		if h.scalar(`SELECT count(*) FROM locks`) > 0 {
			v := h.timeOf(`SELECT expires_at FROM ` + v1Locks + ` WHERE lock_name = 'a'`)
			st.expires = &v
		}
		st.waiters = h.scalar(`SELECT count(*) FROM lock_waiters`)
		return st
	}, func(t *testing.T, h *harness, _ refusalCase, before state) {
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.extended'`))
		if before.expires != nil {
			require.Equal(t, *before.expires, h.timeOf(`SELECT expires_at FROM `+v1Locks+` WHERE lock_name = 'a'`), "expires_at unchanged")
			require.Zero(t, h.scalar(`SELECT extension_count FROM `+v1Locks+` WHERE lock_name = 'a'`))
		} else {
			require.Zero(t, h.scalar(`SELECT count(*) FROM locks`), "an extend creates no row")
		}
		require.Equal(t, before.waiters, h.scalar(`SELECT count(*) FROM lock_waiters`))
	})
}

// TestExtendKeepsLeaseAlive: an extended short lease outlives its first
// expires_at and is not ended by the expiry step.
func TestExtendKeepsLeaseAlive(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice", lease(5)))
	ext := h.one(h.extend("a", "alice", extendBy(30)))
	require.Equal(t, topics.TypeExtended, ext.Type)
	// Five seconds pass, without waiting for them: the lease's first end
	// is behind it, the extended end 30 s ahead.
	h.waitPast(h.timeOf(`UPDATE lock_holders SET expires_at = expires_at - interval '5 seconds' WHERE owner_id = 'alice'
		RETURNING expires_at - interval '30 seconds'`))
	require.Zero(t, h.expireDue())
	require.Equal(t, topics.StatusAcquired, h.one(h.query("a")).LockInfo.Status)
	require.Equal(t, topics.TypeExtended, h.one(h.extend("a", "alice")).Type)
}

// TestExtendMaxLeaseAhead: an extend that would carry the lease more than
// topics.MaxLeaseAheadSeconds past now is refused INVALID_REQUEST, saying
// the bound, and the lease stays as it was, on the common case's
// statement (sent ahead or inline) as on the general path; one within it
// is granted. Without the bound, extends stacked a lease past year 9999,
// whose events neither the worker nor any reader could decode (applyTx
// reads every row back): here a lease already there (left by such
// extends) is refused too, with an answer that decodes, and a resend gets
// that stored answer.
func TestExtendMaxLeaseAhead(t *testing.T) {
	h := newHarness(t)
	ahead := fmt.Sprintf("clock_timestamp() + interval '%d seconds'", topics.MaxLeaseAheadSeconds)
	for name, apply := range map[string]func(...topics.Command) []topics.Event{"ahead": h.apply, "inline": h.applyInline} {
		t.Run(name, func(t *testing.T) {
			h.reset()
			h.one(h.acquire("a", "alice", lease(60)))
			// An hour short of the bound: an extend of a day passes it by
			// 23 hours, one of a minute stays within it, whatever the clock
			// did meanwhile.
			expires := h.timeOf(`UPDATE lock_holders SET expires_at = ` + ahead + ` - interval '1 hour' WHERE owner_id = 'alice' RETURNING expires_at`)
			h.clearOutbox()
			cmd := h.extend("a", "alice", extendBy(topics.MaxLeaseSeconds))
			evs := apply(cmd)
			require.Len(t, evs, 1)
			refused := evs[0]
			require.Equal(t, topics.TypeRejected, refused.Type)
			require.Equal(t, topics.CodeInvalidRequest, refused.ErrorCode)
			require.Contains(t, refused.ErrorMessage, "more than 366 days")
			require.Equal(t, "alice", refused.LockInfo.OwnerID)
			require.Equal(t, expires, refused.LockInfo.ExpiresAt.Time.UTC(), "the answer shows the lease, unchanged")
			require.Zero(t, refused.LockInfo.ExtensionCount)
			require.Equal(t, expires, h.timeOf(`SELECT expires_at FROM lock_holders WHERE owner_id = 'alice'`), "unchanged")
			require.Zero(t, h.scalar(`SELECT extension_count FROM lock_holders WHERE owner_id = 'alice'`))
			require.Equal(t, []string{"lock.acquired alice"}, h.history("a"))
			require.Equal(t, []string{"locks.replies.alice lock.rejected"}, h.routes())
			h.resend(cmd, refused)

			evs = apply(h.extend("a", "alice", extendBy(60)))
			require.Len(t, evs, 1)
			require.Equal(t, topics.TypeExtended, evs[0].Type, "within the bound")
			require.Equal(t, expires.Add(time.Minute), evs[0].LockInfo.ExpiresAt.Time.UTC())

			far := h.timeOf(`UPDATE lock_holders SET expires_at = '9999-12-31 12:00:00Z' WHERE owner_id = 'alice' RETURNING expires_at`)
			cmd = h.extend("a", "alice", extendBy(topics.MaxLeaseSeconds))
			evs = apply(cmd)
			require.Len(t, evs, 1)
			require.Equal(t, topics.CodeInvalidRequest, evs[0].ErrorCode)
			require.Equal(t, far, evs[0].LockInfo.ExpiresAt.Time.UTC())
			require.Equal(t, far, h.timeOf(`SELECT expires_at FROM lock_holders WHERE owner_id = 'alice'`))
			h.resend(cmd, evs[0])
		})
	}
}
