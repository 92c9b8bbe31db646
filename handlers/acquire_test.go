package handlers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

func TestAcquire(t *testing.T) {
	h := newHarness(t)

	ev := h.one(h.acquire("a", "alice", lease(10), func(c *topics.Command) { c.OwnerMetadata = []byte(`{"host":"h1"}`) }))
	require.Equal(t, topics.TypeAcquired, ev.Type)
	require.True(t, ev.Success)
	li := ev.LockInfo
	require.Equal(t, "alice", li.OwnerID)
	require.Equal(t, topics.StatusAcquired, li.Status)
	require.Positive(t, li.FencingToken)
	require.Equal(t, int64(1), li.AcquisitionCount)
	require.Equal(t, 10.0, li.LeaseDuration)
	require.JSONEq(t, `{"host":"h1"}`, string(li.OwnerMetadata))
	require.WithinDuration(t, li.AcquiredAt.Add(10*time.Second), li.ExpiresAt.Time, time.Microsecond)
	require.Equal(t, []string{"locks.replies.alice lock.acquired", "locks.lock.acquired.v1 lock.acquired"}, h.routes())
	out := h.outbox()
	require.Equal(t, "a", out[0].Key)
	require.Equal(t, map[string]string{
		"ce_specversion": "1.0", "ce_id": ev.EventID, "ce_source": "lockworker/test", "ce_type": "lock.acquired",
		"ce_time": ev.OccurredAt.Format(time.RFC3339Nano), "content-type": "application/json", "request_id": ev.RequestID,
	}, out[0].Headers)
	require.Equal(t, ev.EventID, out[1].Event.EventID, "reply and lifecycle carry the same event")
	require.NotNil(t, out[0].Event.DurationMS)

	t.Run("holder re-acquires: same token, later expiry, no lifecycle event", func(t *testing.T) {
		h.clearOutbox()
		again := h.one(h.acquire("a", "alice", lease(60)))
		require.Equal(t, topics.TypeAcquired, again.Type)
		require.Equal(t, li.FencingToken, again.LockInfo.FencingToken)
		require.True(t, again.LockInfo.ExpiresAt.After(li.ExpiresAt.Time))
		require.Equal(t, int64(1), again.LockInfo.AcquisitionCount)
		require.Equal(t, []string{"locks.replies.alice lock.acquired"}, h.routes())
		shorter := h.one(h.acquire("a", "alice", lease(1)))
		require.Equal(t, again.LockInfo.ExpiresAt, shorter.LockInfo.ExpiresAt, "a shorter lease never shortens the current one")
	})

	t.Run("another owner fails fast with LOCK_HELD", func(t *testing.T) {
		h.clearOutbox()
		ev := h.one(h.acquire("a", "bob"))
		require.Equal(t, topics.TypeRejected, ev.Type)
		require.False(t, ev.Success)
		require.Equal(t, topics.CodeLockHeld, ev.ErrorCode)
		require.Contains(t, ev.ErrorMessage, "alice")
		require.InDelta(t, 60, *ev.RetryAfterSeconds, 2)
		require.Equal(t, "alice", ev.LockInfo.OwnerID)
		require.Equal(t, []string{"locks.replies.bob lock.rejected"}, h.routes())
	})

	t.Run("waiting owners are queued in order", func(t *testing.T) {
		h.clearOutbox()
		b := h.one(h.acquire("a", "bob", wait(30)))
		require.Equal(t, topics.TypeQueued, b.Type)
		require.Equal(t, 1, b.QueuePosition)
		c := h.one(h.acquire("a", "carol", wait(30)))
		require.Equal(t, 2, c.QueuePosition)
		// Asking again with a new request_id: the new request takes the
		// owner's place, and the first gets its final answer, lock.withdrawn.
		second := h.acquire("a", "bob", wait(30))
		evs := h.requeue(second, b.RequestID, 1) // an owner already waiting keeps its place
		require.Equal(t, topics.TypeWithdrawn, evs[0].Type)
		require.Equal(t, int64(2), h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))
		require.Equal(t, second.RequestID, h.scalarText(`SELECT request_id FROM lock_waiters WHERE owner_id = 'bob'`))
		require.Equal(t, []string{"locks.replies.bob lock.queued", "locks.replies.carol lock.queued",
			"locks.replies.bob lock.withdrawn", "locks.replies.bob lock.queued"}, h.routes())
		// The first request's stored outcome is the withdrawal.
		require.Equal(t, topics.TypeWithdrawn, h.one(topics.Command{RequestID: b.RequestID, Operation: topics.OpAcquire,
			LockName: "a", OwnerID: "bob", WaitTimeout: 30, ReplyTo: "locks.replies.bob"}).Type)
	})

	t.Run("namespaces keep locks apart", func(t *testing.T) {
		ev := h.one(h.acquire("a", "bob", ns("tenant-1")))
		require.Equal(t, topics.TypeAcquired, ev.Type)
		require.Equal(t, "tenant-1", ev.LockInfo.Namespace)
	})

	t.Run("default lease", func(t *testing.T) {
		ev := h.one(h.acquire("d", "dan"))
		require.Equal(t, 30.0, ev.LockInfo.LeaseDuration)
	})
}

func TestFencingTokensIncreaseAcrossLocks(t *testing.T) {
	h := newHarness(t)
	var last int64
	for i := 0; i < 5; i++ {
		for _, lock := range []string{"x", "y"} {
			ev := h.one(h.acquire(lock, "o"))
			require.Greater(t, ev.LockInfo.FencingToken, last)
			last = ev.LockInfo.FencingToken
			require.Equal(t, topics.TypeReleased, h.one(h.release(lock, "o")).Type)
		}
	}
}

// TestAcquireRace: 50 goroutines, each in its own transaction, acquire one new
// lock at once; exactly one wins.
func TestAcquireRace(t *testing.T) {
	h := newHarness(t)
	const n = 50
	start := make(chan struct{})
	results := make([]topics.Event, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := topics.Command{RequestID: "race-" + string(rune('A'+i)), Operation: topics.OpAcquire, LockName: "hot", OwnerID: "owner-" + string(rune('A'+i))}
			<-start
			err := h.st.InTx(context.Background(), func(tx pgx.Tx) error {
				b := handlers.NewBatch(tx, h.env)
				evs, err := b.Apply(context.Background(), c, time.Now())
				if err != nil {
					return err
				}
				results[i] = evs[0]
				return b.Flush(context.Background())
			})
			require.NoError(t, err)
		}(i)
	}
	close(start)
	wg.Wait()
	won := 0
	for _, ev := range results {
		switch ev.Type {
		case topics.TypeAcquired:
			won++
		case topics.TypeRejected:
			require.Equal(t, topics.CodeLockHeld, ev.ErrorCode)
		default:
			t.Fatalf("unexpected %s", ev.Type)
		}
	}
	require.Equal(t, 1, won)
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.acquired'`))
}

// TestAcquireErrors: the refusals an acquire's handler gives. LOCK_HELD
// answers at once an acquire without wait_timeout of a lock another owner
// holds. LOCK_TIMEOUT is the final answer of a queued acquire whose wait ended
// before the lock came its way, given by whichever transaction next takes
// the lock's waiters: the expiry step, the holder's release, the end of the
// holder's lease. Neither makes the acquirer holder or waiter, nor changes
// the holder or its token. (INVALID_REQUEST and UNSUPPORTED_VERSION come from
// decoding, before any handler: TestRejectBadCommands in batch_test.go.)
func TestAcquireErrors(t *testing.T) {
	// waitOut ends the acquirer's wait now, by database time.
	waitOut := func(h *harness, cmd topics.Command) time.Time {
		return h.endWaits("owner_id = $1", cmd.OwnerID)
	}
	// bobWaitsOnAlice: alice holds "a"; bob's acquire waits (until waitOut
	// ends its wait).
	bobWaitsOnAlice := func(h *harness) topics.Command {
		h.one(h.acquire("a", "alice", lease(30)))
		return h.acquire("a", "bob", wait(30))
	}
	cases := []struct {
		name string
		// setup makes alice hold lock "a" and returns the acquire to refuse.
		setup func(h *harness) topics.Command
		// answer runs what refuses a queued acquire; nil: the acquire is
		// refused at once.
		answer func(h *harness, cmd topics.Command)
		code   string
		status string // lock_info.status of the refusal
		// routes written from the acquire on; nil: only the refusal, to the acquirer.
		routes []string
		after  []string // lockStates afterwards
	}{
		{
			name: "held by another owner, no wait_timeout: LOCK_HELD",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice", lease(30)))
				return h.acquire("a", "bob")
			},
			code: topics.CodeLockHeld, status: topics.StatusAcquired,
			after: []string{"a alice acquired 0"},
		},
		{
			name: "held, others waiting, no wait_timeout: LOCK_HELD, not queued",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice", lease(30)))
				h.one(h.acquire("a", "carol", wait(30)))
				return h.acquire("a", "bob", lease(5))
			},
			code: topics.CodeLockHeld, status: topics.StatusAcquired,
			after: []string{"a alice acquired 1"},
		},
		{
			name: "held in a namespace: LOCK_HELD",
			setup: func(h *harness) topics.Command {
				h.one(h.acquire("a", "alice", ns("tenant"), lease(30)))
				h.one(h.acquire("a", "bob")) // the same name elsewhere is another lock
				h.one(h.release("a", "bob"))
				return h.acquire("a", "bob", ns("tenant"))
			},
			code: topics.CodeLockHeld, status: topics.StatusAcquired,
			after: []string{"a bob released 0", "a alice acquired 0"},
		},
		{
			name:  "the wait ends while the lock is held: LOCK_TIMEOUT from the expiry step",
			setup: bobWaitsOnAlice,
			answer: func(h *harness, cmd topics.Command) {
				waitOut(h, cmd)
				require.Equal(h.t, 1, h.expireDue())
			},
			code: topics.CodeLockTimeout, status: topics.StatusAcquired,
			routes: []string{"locks.replies.bob lock.queued", "locks.replies.bob lock.rejected"},
			after:  []string{"a alice acquired 0"},
		},
		{
			name:  "the holder releases after the wait ended: LOCK_TIMEOUT, the lock is not granted",
			setup: bobWaitsOnAlice,
			answer: func(h *harness, cmd topics.Command) {
				waitOut(h, cmd)
				require.Equal(h.t, topics.TypeReleased, h.one(h.release("a", "alice")).Type)
			},
			code: topics.CodeLockTimeout, status: topics.StatusReleased,
			routes: []string{
				"locks.replies.bob lock.queued",
				"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released",
				"locks.replies.bob lock.rejected",
			},
			after: []string{"a alice released 0"},
		},
		{
			name:  "the lease ends after the wait ended: LOCK_TIMEOUT, the expiry grants nobody",
			setup: bobWaitsOnAlice,
			answer: func(h *harness, cmd topics.Command) {
				deadline := waitOut(h, cmd)
				expires := h.endLeases("owner_id = 'alice'")
				require.True(h.t, deadline.Before(expires), "the wait must end before the lease for this case")
				require.Positive(h.t, h.expireDue())
			},
			code: topics.CodeLockTimeout, status: topics.StatusExpired,
			routes: []string{
				"locks.replies.bob lock.queued",
				"locks.replies.alice lock.expired", "locks.lock.expired.v1 lock.expired",
				"locks.replies.bob lock.rejected",
			},
			after: []string{"a alice expired 0"},
		},
	}
	h := newHarness(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer func(parent *testing.T) { h.t = parent }(h.t)
			h.t = t
			h.reset()
			cmd := tc.setup(h)
			key := topics.LockKey(cmd.Namespace, cmd.LockName)
			holder := func() string {
				return h.scalarText(`SELECT owner_id || ' ' || fencing_token FROM `+v1Locks+` WHERE namespace = $1 AND lock_name = $2`, cmd.Namespace, cmd.LockName)
			}
			before := holder()
			var token int64
			_, err := fmt.Sscanf(before, "alice %d", &token)
			require.NoError(t, err, "alice holds the lock: %q", before)
			h.clearOutbox()

			evs := h.apply(cmd)
			require.Len(t, evs, 1)
			if tc.answer != nil {
				require.Equal(t, topics.TypeQueued, evs[0].Type)
				require.Equal(t, 1, h.outbox()[0].Event.QueuePosition)
				tc.answer(h, cmd)
			}

			// The refusal: exactly one, to the acquirer, about the holder.
			var refusals []record
			for _, r := range h.outbox() {
				if r.Event.RequestID == cmd.RequestID && r.Event.Type == topics.TypeRejected {
					refusals = append(refusals, r)
				}
			}
			require.Len(t, refusals, 1)
			rec := refusals[0]
			ev := rec.Event
			require.Equal(t, cmd.ReplyTo, rec.Topic)
			require.Equal(t, key, rec.Key)
			require.Equal(t, "lock.rejected", rec.Headers["ce_type"])
			require.Equal(t, ev.EventID, rec.Headers["ce_id"])
			require.Equal(t, cmd.RequestID, rec.Headers["request_id"])
			require.False(t, ev.Success)
			require.Equal(t, tc.code, ev.ErrorCode)
			require.NotEmpty(t, ev.ErrorMessage)
			require.Equal(t, topics.OpAcquire, ev.Operation)
			require.NotEmpty(t, ev.EventID)
			li := ev.LockInfo
			require.NotNil(t, li)
			require.Equal(t, cmd.Namespace, li.Namespace)
			require.Equal(t, cmd.LockName, li.LockName)
			require.Equal(t, "alice", li.OwnerID, "lock_info is the holder's")
			require.Equal(t, token, li.FencingToken)
			require.Equal(t, tc.status, li.Status)
			require.NotNil(t, li.ExpiresAt)
			if tc.code == topics.CodeLockHeld {
				require.Contains(t, ev.ErrorMessage, "alice")
				require.NotNil(t, ev.RetryAfterSeconds, "LOCK_HELD says when the lease ends")
				require.Positive(t, *ev.RetryAfterSeconds)
				require.InDelta(t, li.ExpiresAt.Sub(ev.OccurredAt.Time).Seconds(), *ev.RetryAfterSeconds, 0.001)
				require.Equal(t, ev.EventID, evs[0].EventID, "the refusal is the acquire's own answer")
				require.NotNil(t, ev.DurationMS, "the record says how long the command took")
			} else {
				require.Nil(t, ev.RetryAfterSeconds, "retry_after_seconds comes only with LOCK_HELD")
				require.False(t, ev.OccurredAt.Before(h.outbox()[0].Event.OccurredAt.Time), "refused after it was queued")
			}
			routes := tc.routes
			if routes == nil {
				routes = []string{cmd.ReplyTo + " lock.rejected"}
			}
			require.Equal(t, routes, h.routes())

			// Nothing changed hands: the holder and its token stay, the
			// acquirer neither holds nor waits, and the refusal is the
			// acquire's stored outcome.
			require.Equal(t, before, holder())
			require.Equal(t, tc.after, h.lockStates())
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_waiters WHERE owner_id = $1`, cmd.OwnerID))
			require.Equal(t, h.scalar(`SELECT count(*) FROM lock_waiters`), h.scalar(`SELECT coalesce(sum(waiter_count), 0) FROM locks`))
			require.Zero(t, h.scalar(`SELECT count(*) FROM lock_events WHERE type = 'lock.acquired' AND owner_id = $1 AND namespace = $2`, cmd.OwnerID, cmd.Namespace))
			require.Equal(t, ev.EventID, h.outcome(cmd.RequestID).EventID)

			// The acquire sent again is answered with the same refusal and
			// changes nothing.
			require.Equal(t, tc.code, h.resend(cmd, ev).ErrorCode)
		})
	}
}

// requeue applies an owner's new acquire while its earlier request oldID
// waits: it answers oldID (the first event, for the caller to judge), then
// queues the new request at position.
func (h *harness) requeue(c topics.Command, oldID string, position int) []topics.Event {
	h.t.Helper()
	evs := h.apply(c)
	require.Len(h.t, evs, 2)
	require.Equal(h.t, oldID, evs[0].RequestID)
	require.Equal(h.t, topics.TypeQueued, evs[1].Type)
	require.Equal(h.t, c.RequestID, evs[1].RequestID)
	require.Equal(h.t, position, evs[1].QueuePosition)
	return evs
}

// An owner whose wait ended, but was not answered yet (the scheduler looks
// within 1 s), asks again with a new request_id: the ended wait is answered
// LOCK_TIMEOUT then, and the new request queues and is later granted, so
// each request gets its final answer.
func TestAcquireAgainAfterWaitEnded(t *testing.T) {
	h := newHarness(t)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("a", "alice")).Type)
	first := h.acquire("a", "bob", wait(0.2))
	require.Equal(t, topics.TypeQueued, h.one(first).Type)
	h.waitPast(h.timeOf(`SELECT deadline FROM lock_waiters WHERE owner_id = 'bob'`))

	h.clearOutbox()
	second := h.acquire("a", "bob", wait(30))
	evs := h.requeue(second, first.RequestID, 1)
	require.Equal(t, topics.TypeRejected, evs[0].Type)
	require.Equal(t, topics.CodeLockTimeout, evs[0].ErrorCode)
	require.Equal(t, int64(1), h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))

	// alice releases: the second request is granted, to its reply_to.
	h.clearOutbox()
	h.apply(h.release("a", "alice"))
	granted := h.scalarText(`SELECT holder_request_id FROM ` + v1Locks + ` WHERE lock_name = 'a'`)
	require.Equal(t, second.RequestID, granted)
	require.Contains(t, h.routes(), "locks.replies.bob lock.acquired")
}

// TestRenewalMovesReplyTo: a holder's renewal from another reply topic
// moves the lease's later events (its expiry here) there.
func TestRenewalMovesReplyTo(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("r", "alice", lease(60)))
	again := h.acquire("r", "alice", lease(60))
	again.ReplyTo = "locks.replies.elsewhere"
	require.Equal(t, topics.TypeAcquired, h.one(again).Type)
	h.endLeases(`owner_id = 'alice'`)
	h.clearOutbox()
	require.Equal(t, 1, h.expireDue())
	require.Equal(t, []string{"locks.replies.elsewhere lock.expired", "locks.lock.expired.v1 lock.expired"}, h.routes())
}
