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

// TestEventRouting observes the rows of docs/design.md's "Which events go
// where" on the real topics of a kfake broker (internal/realkafka runs the
// same cases on Apache Kafka).
func TestEventRouting(t *testing.T) {
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{})
	e2e.EventRouting(t, e, "w")
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
	// partitions move between one applier and several. Kafka's smallest
	// default session timeout: a shorter one drops members that a loaded
	// machine stalls, and the group, rebalancing again and again, gives w4
	// nothing; the crashed w1's partitions wait for it, well within the
	// minute the test gives progress after the crash.
	opts := func(name string, appliers int) e2e.WorkerOpts {
		return e2e.WorkerOpts{Name: name, SessionTimeout: 6 * time.Second, Static: true, Appliers: appliers}
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
	// Its connections' application_name: this test's alone, so that
	// another run on the same server (a CI job, -count=2) keeps its own.
	victim := "victim-" + e.Schema.Name
	e.StartWorker(e2e.WorkerOpts{Name: victim, Appliers: 2})
	replies := []string{"locks.replies.kill"}
	watch := e.Watch(replies...)
	const locks, rounds = 100, 10
	ids := exactlyOnceLoad(t, e, locks, rounds, replies)
	killed := 0
	for i := 0; i < 5; i++ {
		watch.WaitFor(t, time.Minute, "progress", func(rs []e2e.Received) bool { return len(rs) >= (i+1)*250 })
		var n int
		require.NoError(t, e.Store.Pool.QueryRow(context.Background(),
			`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE application_name = $1 AND datname = current_database()`, victim).Scan(&n))
		killed += n
	}
	require.Positive(t, killed)
	checkExactlyOnce(t, e, watch, ids, locks, rounds)
}
