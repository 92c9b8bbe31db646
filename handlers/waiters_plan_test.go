package handlers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// One owner's wait is read by the unique key, and the head of the queue
// through lock_waiters_fifo from its front, not through the lock's whole
// queue, under the generic plans the worker's connections keep, whatever
// the statistics of lock_waiters say (queueStats). Asked by equality,
// every index of the lock's waiters estimated one row where the queue was
// not in the statistics, and PostgreSQL took the smallest, which walks the
// queue: every command on a lock queued W deep read its W waiters. Where
// it was, the head's condition on the deadline made
// lock_waiters_lock_deadline look the narrower, and PostgreSQL sorted the
// lock's whole live queue by id for its first few.
func TestOwnersWaitIsReadByItsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 3,000 locks and a queue of 5,000")
	}
	t.Parallel()
	forQueueStats(t, func(t *testing.T, conn *testdb.Explained) {
		cmd := func(id, owner string) topics.Command {
			return topics.Command{Operation: topics.OpRelease, RequestID: "plan-" + id, LockName: hotLock, OwnerID: owner, ReplyTo: "locks.replies.plan"}
		}
		// Past the five custom plans PostgreSQL makes first: the
		// generic plan is the one a connection keeps.
		var batches [][]topics.Command
		for i := range 7 {
			batches = append(batches, []topics.Command{
				cmd(fmt.Sprintf("withdraw-%d", i), fmt.Sprintf("queue-%d", hotQueue-1-i)), // a deep waiter gives up
				cmd(fmt.Sprintf("not-held-%d", i), "nobody"),                              // nobody's wait: NOT_HELD
			})
		}
		applyBatches(t, conn.Pool, planEnv(3), batches)
		n := fewPages(t, conn, "id NOT IN (SELECT id FROM head)", 40) // waitersSQL
		require.Equal(t, 14, n, "every command's read of the waiters explained")
	})
}

// An acquire by an owner already waiting counts its place through the
// lock_waiters_fifo entries ahead of it alone, under the generic plan,
// whatever the statistics of lock_waiters say (queueStats). Counted
// unordered, every index of the lock's waiters estimated one row where
// the queue was not in the statistics, and PostgreSQL counted through
// lock_waiters_lock_deadline: the lock's whole queue for any place.
func TestPlaceIsCountedThroughTheWaitersAhead(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 3,000 locks and a queue of 5,000")
	}
	t.Parallel()
	forQueueStats(t, func(t *testing.T, conn *testdb.Explained) {
		var batches [][]topics.Command
		for i := range 7 { // past the five custom plans
			// The 101st to 107th waiters ask again: each counts its 101+ places.
			batches = append(batches, []topics.Command{{Operation: topics.OpAcquire, RequestID: fmt.Sprintf("again-%d", i),
				LockName: hotLock, OwnerID: fmt.Sprintf("queue-%d", 100+i), WaitTimeout: 30, ReplyTo: "locks.replies.plan"}})
		}
		applyBatches(t, conn.Pool, planEnv(3), batches)
		n := fewPages(t, conn, "q.id <= w.id", 40) // waitersSQL, with its count of the place
		require.Equal(t, 7, n, "every acquire's read of the waiters explained")
	})
}

// hotLock is the lock of forQueueStats's long queue, hotQueue waiters
// (queue-0 first).
const hotLock, hotQueue = "held-2009", 5000

// queueStats are the statistics of lock_waiters a long queue's commands
// are planned under: never gathered (autovacuum off, or not come yet);
// gathered before the queue, while the table held a few waiters or many
// locks' one each (n_distinct of lock_name near the row count, whatever
// one lock's queue holds then); or gathered with the queue.
var queueStats = []struct {
	name      string
	waiting   int  // fillLarge's waiters: waiter-N on held-N, N < waiting
	before    bool // analyzed before the queue
	withQueue bool // analyzed with it
}{
	{"never analyzed", 2000, false, false},
	{"analyzed nearly empty", 3, true, false},
	{"analyzed with many locks' waiters", 2000, true, false},
	{"analyzed with the queue", 2000, false, true},
}

// forQueueStats runs test, in parallel, under each of queueStats, on a
// schema of its own of 3,000 locks (fillLarge) with hotQueue waiters on
// hotLock, through an Explained pool.
func forQueueStats(t *testing.T, test func(t *testing.T, conn *testdb.Explained)) {
	for _, stats := range queueStats {
		t.Run(stats.name, func(t *testing.T) {
			t.Parallel()
			st := testdb.New(t)
			fillLarge(t, st.Pool, 3000, stats.waiting, stats.before)
			fillQueue(t, st.Pool, hotLock, hotQueue, stats.withQueue)
			test(t, testdb.NewExplained(t, st.Pool))
		})
	}
}

// The holder's extend in one statement probes whether a session waits for
// its lock with that lock's entries of lock_waiters_lock_session, under
// the generic plan, also where lock_waiters was analyzed nearly empty and
// sessions then queued on thousands of other locks: PostgreSQL made the
// probe a hashed subplan of every session's wait in the table, read for
// each extend of a lock with waiters.
func TestExtendProbesItsLocksSessionWaitsOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 6,000 locks and 5,000 session waits")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	fillLarge(t, st.Pool, 6000, 3, true) // analyzed with waiter-1 and waiter-2 alone
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition, reply_to, session_id)
			SELECT namespace, lock_name, 'big-owner', 'big-' || lock_name, 30, now() + interval '1 hour', source_partition, 'locks.replies.fill', 'big'
			FROM locks WHERE lock_name ~ '^held-[0-9]+$' AND substr(lock_name, 6)::int BETWEEN 100 AND 5099;
		UPDATE locks SET waiter_count = waiter_count + 1 WHERE lock_name IN (SELECT lock_name FROM lock_waiters WHERE session_id = 'big')`)
	require.NoError(t, err)
	conn := testdb.NewExplained(t, st.Pool)
	var batches [][]topics.Command
	for i := range 7 { // past the five custom plans
		batches = append(batches, []topics.Command{{Operation: topics.OpExtend, RequestID: fmt.Sprintf("extend-%d", i),
			LockName: "held-1", OwnerID: "owner-1", ExtensionDuration: 30, ReplyTo: "locks.replies.plan"}}) // held-1 has waiter-1
	}
	applyBatches(t, conn.Pool, planEnv(1), batches)
	n := fewPages(t, conn, "extension_count = h.extension_count + 1", 60)
	require.Equal(t, 7, n, "every extend explained")
	var extensions int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT extension_count FROM lock_holders WHERE lock_name = 'held-1'`).Scan(&extensions))
	require.Equal(t, 7, extensions)
}

// planEnv is the Env of the plan tests' batches, of partition p.
func planEnv(p int32) Env {
	return Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/test", Partition: p}
}

// fewPages checks that every statement explained whose plan holds marker
// read fewer than limit pages, and returns how many there were.
func fewPages(t *testing.T, conn *testdb.Explained, marker string, limit int) int {
	t.Helper()
	n := 0
	for _, p := range conn.Plans() {
		if !strings.Contains(p, marker) {
			continue
		}
		n++
		pages, err := testdb.PlanPages(p)
		require.NoError(t, err, p)
		require.Less(t, pages, limit, "a statement read too much:\n%s", p)
	}
	return n
}
