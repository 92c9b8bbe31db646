package worker_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

func cmd(op, id, lock, owner, reply string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: id, Operation: op, LockName: lock, OwnerID: owner, ReplyTo: reply}
	for _, m := range mods {
		m(&c)
	}
	return c
}

const (
	alice = "locks.replies.alice"
	bob   = "locks.replies.bob"
	carol = "locks.replies.carol"
)

// TestEventRouting observes the rows of docs/design.md's "Which events go
// where" on the real topics.
func TestEventRouting(t *testing.T) {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{})
	n := e.Names
	w := e.Watch(alice, bob, carol, n.Acquired, n.Released, n.Expired, n.Revoked, n.DeadLetter)
	p := e.Producer()
	lease := func(s float64) func(*topics.Command) { return func(c *topics.Command) { c.LeaseDuration = s } }
	wait := func(s float64) func(*topics.Command) { return func(c *topics.Command) { c.WaitTimeout = s } }

	// acquire granted at once: reply and lifecycle, with CloudEvents headers.
	e.Send(p, cmd("acquire", "a1", "L", "alice", alice, lease(60)))
	got := w.WaitEvent(t, "a1 acquired", e2e.ByRequest(alice, "a1", topics.TypeAcquired))
	life := w.WaitEvent(t, "lifecycle acquired", e2e.ByRequest(n.Acquired, "a1", topics.TypeAcquired))
	require.Equal(t, got.Event.EventID, life.Event.EventID)
	require.Equal(t, "L", string(got.Record.Key))
	require.Equal(t, "1.0", got.Header("ce_specversion"))
	require.Equal(t, got.Event.EventID, got.Header("ce_id"))
	require.Equal(t, "lockworker/w", got.Header("ce_source"))
	require.Equal(t, "lock.acquired", got.Header("ce_type"))
	require.NotEmpty(t, got.Header("ce_time"))
	require.Equal(t, "application/json", got.Header("content-type"))
	require.Equal(t, "a1", got.Header("request_id"))
	token := got.Event.LockInfo.FencingToken

	// refused at once; queued; a queued owner that releases is withdrawn.
	e.Send(p, cmd("acquire", "b1", "L", "bob", bob))
	held := w.WaitEvent(t, "b1 LOCK_HELD", e2e.ByRequest(bob, "b1", topics.TypeRejected))
	require.Equal(t, topics.CodeLockHeld, held.Event.ErrorCode)
	require.NotNil(t, held.Event.RetryAfterSeconds)
	e.Send(p, cmd("acquire", "b2", "L", "bob", bob, wait(30)))
	require.Equal(t, 1, w.WaitEvent(t, "b2 queued", e2e.ByRequest(bob, "b2", topics.TypeQueued)).Event.QueuePosition)
	e.Send(p, cmd("acquire", "c1", "L", "carol", carol, wait(30)), cmd("release", "c2", "L", "carol", carol))
	w.WaitEvent(t, "c1 queued", e2e.ByRequest(carol, "c1", topics.TypeQueued))
	w.WaitEvent(t, "c2 withdrawn", e2e.ByRequest(carol, "c2", topics.TypeWithdrawn))

	// extend and query answer only the requester.
	e.Send(p, cmd("extend", "a2", "L", "alice", alice), cmd("query", "a3", "L", "", alice))
	require.Equal(t, int64(1), w.WaitEvent(t, "a2 extended", e2e.ByRequest(alice, "a2", topics.TypeExtended)).Event.LockInfo.ExtensionCount)
	require.Equal(t, "alice", w.WaitEvent(t, "a3 status", e2e.ByRequest(alice, "a3", topics.TypeStatus)).Event.LockInfo.OwnerID)

	// release: the next waiter's reply_to gets lock.acquired; lifecycle released then acquired.
	e.Send(p, cmd("release", "a4", "L", "alice", alice))
	w.WaitEvent(t, "a4 released", e2e.ByRequest(alice, "a4", topics.TypeReleased))
	grant := w.WaitEvent(t, "b2 granted", e2e.ByRequest(bob, "b2", topics.TypeAcquired))
	require.Greater(t, grant.Event.LockInfo.FencingToken, token)
	rel := w.WaitEvent(t, "lifecycle released", e2e.ByRequest(n.Released, "a4", ""))
	acq := w.WaitEvent(t, "lifecycle acquired for b2", e2e.ByRequest(n.Acquired, "b2", ""))
	// Topics are published concurrently: the events' own times say the order.
	require.False(t, acq.Event.OccurredAt.Before(rel.Event.OccurredAt.Time), "released, then acquired")

	// a lease that ends: the holder's reply_to and the lifecycle topic hear of
	// it within 1 s of expires_at, through the scheduler.
	e.Send(p, cmd("acquire", "b3", "S", "bob", bob, lease(0.3)))
	short := w.WaitEvent(t, "b3 acquired", e2e.ByRequest(bob, "b3", topics.TypeAcquired))
	exp := w.WaitEvent(t, "S expired", func(r e2e.Received) bool {
		return r.Record.Topic == bob && r.Event.Type == topics.TypeExpired && r.Event.LockInfo.LockName == "S"
	})
	w.WaitEvent(t, "lifecycle expired", func(r e2e.Received) bool { return r.Record.Topic == n.Expired && r.Event.EventID == exp.Event.EventID })
	late := exp.Event.OccurredAt.Sub(short.Event.LockInfo.ExpiresAt.Time)
	require.GreaterOrEqual(t, late, time.Duration(0))
	require.Less(t, late, time.Second, "lock.expired %s after expires_at", late)
	require.Equal(t, topics.OpExpire, exp.Event.Operation)

	// revoke: the revoker's answer with the count; the holder's reply_to and
	// the lifecycle topic get lock.revoked, without the revoker's request_id.
	rv := cmd("revoke", "a6", "L", "", alice)
	rv.Reason = "ops"
	e.Send(p, rv)
	ans := w.WaitEvent(t, "a6 revoked", e2e.ByRequest(alice, "a6", topics.TypeRevoked))
	require.Equal(t, 1, ans.Event.RevokedCount)
	told := w.WaitEvent(t, "bob told", func(r e2e.Received) bool {
		return r.Record.Topic == bob && r.Event.Type == topics.TypeRevoked && r.Event.LockInfo.LockName == "L"
	})
	require.Empty(t, told.Event.RequestID)
	require.Equal(t, "ops", told.Event.Reason)
	require.Equal(t, topics.StatusRevoked, told.Event.LockInfo.Status)
	w.WaitEvent(t, "lifecycle revoked", func(r e2e.Received) bool { return r.Record.Topic == n.Revoked && r.Event.EventID == told.Event.EventID })

	// cleanup answers with lock.cleaned.
	e.Send(p, topics.Command{RequestID: "a5", Operation: "cleanup", LockName: "*", ReplyTo: alice})
	w.WaitEvent(t, "a5 cleaned", e2e.ByRequest(alice, "a5", topics.TypeCleaned))

	// invalid commands: INVALID_REQUEST to a valid reply_to, the record to the
	// dead-letter topic with its headers; not JSON: dead-letter only.
	bad := `{"request_id":"bad1","operation":"acquire","lock_name":"L","reply_to":"locks.replies.alice"}`
	e.SendRaw(p, "L", []byte(bad))
	rej := w.WaitEvent(t, "bad1 rejected", e2e.ByRequest(alice, "bad1", topics.TypeRejected))
	require.Equal(t, topics.CodeInvalidRequest, rej.Event.ErrorCode)
	dl := w.WaitEvent(t, "dead letter", func(r e2e.Received) bool { return r.Record.Topic == n.DeadLetter && string(r.Record.Value) == bad })
	require.Contains(t, dl.Header("error"), "owner_id is required")
	require.Equal(t, n.Commands, dl.Header("source_topic"))
	require.NotEmpty(t, dl.Header("source_partition"))
	require.NotEmpty(t, dl.Header("source_offset"))
	require.Equal(t, "L", string(dl.Record.Key))
	e.SendRaw(p, "L", []byte("not json"))
	w.WaitEvent(t, "dead letter of garbage", func(r e2e.Received) bool {
		return r.Record.Topic == n.DeadLetter && string(r.Record.Value) == "not json"
	})
	e.SendRaw(p, "L", []byte(`{"v":2,"operation":"query","lock_name":"L","reply_to":"locks.replies.alice","request_id":"v2"}`))
	require.Equal(t, topics.CodeUnsupportedVersion, w.WaitEvent(t, "v2 rejected", e2e.ByRequest(alice, "v2", topics.TypeRejected)).Event.ErrorCode)

	// the same request_id again: same event_id, nothing applied twice.
	e.Send(p, cmd("acquire", "a1", "L", "alice", alice, lease(60)))
	w.WaitFor(t, 20*time.Second, "a1 answered twice", func(rs []e2e.Received) bool {
		var ids []string
		for _, r := range rs {
			if r.Record.Topic == alice && r.Event.RequestID == "a1" {
				ids = append(ids, r.Event.EventID)
			}
		}
		return len(ids) == 2 && ids[0] == ids[1]
	})
}

// exactlyOnceLoad produces rounds acquire+release pairs for each of locks
// locks (same owner per lock), spread over replyTopics, and returns the
// request ids.
func exactlyOnceLoad(t *testing.T, e *e2e.Env, locks, rounds int, replyTopics []string) []string {
	var cmds []topics.Command
	var ids []string
	for r := 0; r < rounds; r++ {
		for l := 0; l < locks; l++ {
			lock, owner, reply := "eo-"+strconv.Itoa(l), "owner-"+strconv.Itoa(l), replyTopics[l%len(replyTopics)]
			a, rel := fmt.Sprintf("%s-a%d", lock, r), fmt.Sprintf("%s-r%d", lock, r)
			cmds = append(cmds, cmd("acquire", a, lock, owner, reply, func(c *topics.Command) { c.LeaseDuration = 300 }),
				cmd("release", rel, lock, owner, reply))
			ids = append(ids, a, rel)
		}
	}
	p := e.Producer()
	for i := 0; i < len(cmds); i += 500 {
		e.Send(p, cmds[i:min(i+500, len(cmds))]...)
	}
	return ids
}

// checkExactlyOnce: every request answered, every lock acquired exactly
// rounds times, history doubled nowhere, no offset skipped.
func checkExactlyOnce(t *testing.T, e *e2e.Env, w *e2e.Watcher, ids []string, locks, rounds int) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	w.WaitFor(t, 3*time.Minute, "an outcome for every request", func(rs []e2e.Received) bool {
		seen := map[string]bool{}
		for _, r := range rs {
			if want[r.Event.RequestID] {
				seen[r.Event.RequestID] = true
			}
		}
		return len(seen) == len(want)
	})
	for _, r := range w.All() {
		require.True(t, r.Event.Success, "request %s: %s %s", r.Event.RequestID, r.Event.ErrorCode, r.Event.ErrorMessage)
	}
	ctx := context.Background()
	var bad int
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE lock_name LIKE 'eo-%' AND acquisition_count <> $1`, rounds).Scan(&bad))
	require.Zero(t, bad, "locks acquired other than %d times", rounds)
	var events int
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM lock_events WHERE lock_name LIKE 'eo-%'`).Scan(&events))
	require.Equal(t, 2*locks*rounds, events)
	var total int64
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT coalesce(sum(next_offset), 0) FROM consumer_offsets WHERE next_offset > 0`).Scan(&total))
	require.Equal(t, int64(len(ids)), total, "stored offsets cover every record once")
}

// TestExactlyOnceAcrossWorkerCrash: 10,000 commands over 16 partitions while
// one of three workers dies abruptly and later a fourth joins.
func TestExactlyOnceAcrossWorkerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("long")
	}
	e := e2e.New(t)
	// The workers differ in how many transactions they run at once, so
	// partitions move between one applier and several.
	opts := func(name string, appliers int) e2e.WorkerOpts {
		return e2e.WorkerOpts{Name: name, SessionTimeout: 1500 * time.Millisecond, Static: true, Appliers: appliers}
	}
	w1 := e.StartWorker(opts("w1", 3))
	e.StartWorker(opts("w2", 1))
	e.StartWorker(opts("w3", 2))
	replies := []string{"locks.replies.eo0", "locks.replies.eo1", "locks.replies.eo2", "locks.replies.eo3"}
	watch := e.Watch(replies...)
	const locks, rounds = 500, 10
	ids := exactlyOnceLoad(t, e, locks, rounds, replies)
	watch.WaitFor(t, time.Minute, "some progress", func(rs []e2e.Received) bool { return len(rs) >= 2000 })
	w1.Kill()
	watch.WaitFor(t, time.Minute, "progress after the crash", func(rs []e2e.Received) bool { return len(rs) >= 5000 })
	e.StartWorker(opts("w4", 2))
	checkExactlyOnce(t, e, watch, ids, locks, rounds)
}

// TestDatabaseConnectionKilled: the worker's connections are terminated
// under load; batches are retried, nothing lost or doubled.
func TestDatabaseConnectionKilled(t *testing.T) {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "victim", Appliers: 2})
	replies := []string{"locks.replies.kill"}
	watch := e.Watch(replies...)
	const locks, rounds = 100, 10
	ids := exactlyOnceLoad(t, e, locks, rounds, replies)
	killed := 0
	for i := 0; i < 5; i++ {
		watch.WaitFor(t, time.Minute, "progress", func(rs []e2e.Received) bool { return len(rs) >= (i+1)*250 })
		var n int
		require.NoError(t, e.Store.Pool.QueryRow(context.Background(),
			`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'victim'`).Scan(&n))
		killed += n
	}
	require.Positive(t, killed)
	checkExactlyOnce(t, e, watch, ids, locks, rounds)
}
