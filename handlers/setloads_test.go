package handlers

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// A session's end settles its locks (settleLocks) reading the rows of all
// of them in one statement and the holders of all of them in one more,
// whatever their number: two statements per lock cost 25-100 µs each of
// fixed overhead, most of the end of a session of thousands of leases.
func TestSettleReadsManyLocksInTwoStatements(t *testing.T) {
	t.Parallel()
	const n = 30
	sent := &testdb.Statements{}
	st := testdb.NewWith(t, store.Config{LockTimeout: -1, Tracer: sent})
	env := planEnv(0)
	applyBatches(t, st.Pool, env, leasesInSession("s", n))

	sent.Take()
	applyBatches(t, st.Pool, env, [][]topics.Command{{sessionCommand(topics.OpSessionClose, "close", "s")}})
	var rows, holders int
	for _, sql := range sent.Take() {
		sql = strings.TrimSpace(sql)
		if strings.Contains(sql, "FROM locks WHERE") && strings.Contains(sql, "FOR UPDATE") {
			rows++
		}
		if strings.HasPrefix(sql, "SELECT") && strings.Contains(sql, "FROM lock_holders WHERE namespace =") {
			holders++
		}
	}
	require.Equal(t, [2]int{1, 1}, [2]int{rows, holders}, "the statements reading the rows and the holders of %d locks", n)

	var left, released int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM lock_holders),
		(SELECT count(*) FROM locks WHERE status = 'released' AND holder_count = 0)`).Scan(&left, &released))
	require.Equal(t, [2]int{0, n}, [2]int{left, released}, "holders left, locks released")
}

// A load of several locks locks their rows in key order, the order every
// transaction takes lock rows in (no deadlock), each row's time read
// after its own row lock (timedAfterLock): while the row of l-05 is held
// elsewhere, a session's end holds the rows before it and none after, and
// the locks it waited for, and those after, change at a time after the
// wait.
func TestSettleLocksRowsInKeyOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewWith(t, store.Config{LockTimeout: -1})
	env := planEnv(0)
	applyBatches(t, st.Pool, env, leasesInSession("s", 10))

	holder, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.WithoutCancel(ctx))
	var pid int64
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = holder.Exec(ctx, `SELECT FROM locks WHERE lock_name = 'l-05' FOR UPDATE`)
	require.NoError(t, err)

	done := make(chan error, 1)
	go func() {
		done <- applyBatch(ctx, st.Pool, env, []topics.Command{sessionCommand(topics.OpSessionClose, "close", "s")})
	}()
	require.Eventually(t, func() bool {
		var waiting bool
		err := st.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))`, pid).Scan(&waiting)
		return err == nil && waiting
	}, 10*time.Second, 5*time.Millisecond, "the session's end waits for l-05")
	var free []string
	require.NoError(t, pgx.BeginFunc(ctx, st.Pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT lock_name FROM locks ORDER BY lock_name FOR UPDATE SKIP LOCKED`)
		if err == nil {
			free, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		return err
	}))
	require.Equal(t, []string{"l-06", "l-07", "l-08", "l-09"}, free, "the rows no transaction holds while the end waits for l-05")

	var waited time.Time
	require.NoError(t, holder.QueryRow(ctx, `SELECT clock_timestamp()`).Scan(&waited))
	require.NoError(t, holder.Commit(ctx))
	require.NoError(t, <-done)
	rows, err := st.Pool.Query(ctx, `SELECT lock_name FROM locks WHERE updated_at < $1 ORDER BY lock_name`, waited)
	require.NoError(t, err)
	before, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"l-00", "l-01", "l-02", "l-03", "l-04"}, before, "the locks changed at a time before the wait")
}

// The loads of several locks look each key up (the rows by locks_pkey,
// each locked in turn, the holders by lock_holders_pkey), and so do their
// writes (the leases ended, the rows updated), under the generic plan,
// whatever the statistics of the tables say: a plan that joined the keys
// to a scan of either table would read every lock.
func TestSettleLoadsLookUpEachKey(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 3,000 locks, three times")
	}
	t.Parallel()
	const n = 40
	for _, stats := range []struct {
		name          string
		before, after bool // analyzed before the fill, after it
	}{{"never analyzed", false, false}, {"analyzed empty", true, false}, {"analyzed", false, true}} {
		t.Run(stats.name, func(t *testing.T) {
			t.Parallel()
			st := testdb.New(t)
			if stats.before {
				_, err := st.Pool.Exec(context.Background(), `ANALYZE locks, lock_holders`)
				require.NoError(t, err)
			}
			fillLarge(t, st.Pool, 3000, 3, stats.after)
			env := planEnv(0)
			applyBatches(t, st.Pool, env, leasesInSession("s", n))
			conn := testdb.NewExplained(t, st.Pool)
			applyBatches(t, conn.Pool, env, [][]topics.Command{{sessionCommand(topics.OpSessionClose, "close", "s")}})

			// Each key's look-up runs once per key (loops), under the
			// nested loop over the keys in their order.
			perKey := func(node string) string { return node + fmt.Sprintf(` .*loops=%d\)`, n) }
			for _, p := range []struct {
				marker string
				plan   []string
			}{
				{"FOR UPDATE) r ORDER BY k.ord", []string{`(?s)Nested Loop.*Function Scan on k.*LockRows.*Index Scan using locks_pkey`,
					perKey(`LockRows`), perKey(`Index Scan using locks_pkey on locks`)}},
				{"CROSS JOIN LATERAL (SELECT owner_id", []string{`(?s)Nested Loop.*Function Scan on k.*Index Scan using lock_holders_pkey`,
					perKey(`Index Scan using lock_holders_pkey on lock_holders`)}},
				// The writes (lockWrites): the leases ended and the rows,
				// each looked up by its key, then changed by its ctid.
				{"DELETE FROM lock_holders WHERE ctid", []string{`Tid Scan on lock_holders`,
					`(?s)Nested Loop.*Function Scan on u.*Index Scan using lock_holders_pkey on lock_holders h`,
					perKey(`Index Scan using lock_holders_pkey on lock_holders h`)}},
				{"UPDATE locks l SET status = u.c3", []string{`Tid Scan on locks l`,
					`(?s)Nested Loop.*Function Scan on u.*Index Scan using locks_pkey on locks k`,
					perKey(`Index Scan using locks_pkey on locks k`)}},
			} {
				pages, plan := conn.Pages(t, p.marker)
				for _, re := range p.plan {
					require.Regexp(t, regexp.MustCompile(re), plan)
				}
				require.NotContains(t, plan, "Seq Scan", plan)
				require.Less(t, pages, 20*n, plan)
			}
		})
	}
}

// leasesInSession is the batches that open session id and take n locks
// in it, l-00 on, each by a lease of its own.
func leasesInSession(id string, n int) [][]topics.Command {
	var acquires []topics.Command
	for i := range n {
		acquires = append(acquires, topics.Command{Operation: topics.OpAcquire, RequestID: fmt.Sprintf("%s-acquire-%d", id, i),
			LockName: fmt.Sprintf("l-%02d", i), OwnerID: "o", SessionID: id, ReplyTo: "locks.replies.o"})
	}
	return [][]topics.Command{{sessionCommand(topics.OpSessionOpen, "open", id)}, acquires}
}

// sessionCommand is session id's op by owner o, request "<id>-<name>".
func sessionCommand(op, name, id string) topics.Command {
	return topics.Command{Operation: op, RequestID: id + "-" + name, OwnerID: "o", SessionID: id, TTL: 60, ReplyTo: "locks.replies.o"}
}
