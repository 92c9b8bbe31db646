package handlers_test

import (
	"context"
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
		again := h.one(h.acquire("a", "bob", wait(30)))
		require.Equal(t, 1, again.QueuePosition, "an owner already waiting keeps its place")
		require.Equal(t, int64(2), h.scalar(`SELECT waiter_count FROM locks WHERE lock_name = 'a'`))
		require.Equal(t, []string{"locks.replies.bob lock.queued", "locks.replies.carol lock.queued", "locks.replies.bob lock.queued"}, h.routes())
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
