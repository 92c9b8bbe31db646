package handlers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/topics"
)

// The audit of issue 17: on 100,000 held locks, 100,000 stored outcomes,
// 10,000 sessions and 2,000 waiters, every statement a batch of every operation sends, and the
// expiry scheduler's and the periodic cleanup's, reads by index under the
// generic plans the worker's connections use (store.Open): none scans one
// of the big tables, and none reads more than a few hundred pages. A
// statement that read every lock would pass on lockbench's fresh tables and
// on the other tests' few rows; here it reads 1,000+ pages. auto_explain
// hands each plan to the test as a notice, with the buffers it read.
func TestPlansOnLargeTables(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 100,000 locks")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	const held, waiting = 100_000, 2_000
	fillLarge(t, st.Pool, held, waiting, true)
	// A long queue (a job-queue semaphore, a hot mutex): a command on its
	// lock reads the few waiters it decides from, not the whole queue.
	const hot, queueLen = "held-2009", 20_000
	fillQueue(t, st.Pool, hot, queueLen, true)

	// The pool's session settings (store.Open's): its generic plans.
	conn := testdb.NewExplained(t, st.Pool)

	env := planEnv(3)
	reply := "locks.replies.audit"
	cmd := func(op, id, lock, owner string) topics.Command {
		return topics.Command{Operation: op, RequestID: "audit-" + id, LockName: lock, OwnerID: owner, ReplyTo: reply}
	}
	token := func(lock string) *int64 {
		var tok int64
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT fencing_token FROM lock_holders WHERE lock_name = $1`, lock).Scan(&tok))
		return &tok
	}
	queued := cmd(topics.OpAcquire, "queued", "held-11", "late")
	queued.WaitTimeout = 30
	shared := cmd(topics.OpAcquire, "shared", "fresh-shared", "reader")
	shared.Mode = "shared"
	sem := cmd(topics.OpAcquire, "sem", "fresh-sem", "worker-1")
	sem.Limit = 3
	extend := cmd(topics.OpExtend, "extend", "held-21", "owner-21")
	extend.ExtensionDuration = 30
	extend.FencingToken = token("held-21")
	release := cmd(topics.OpRelease, "release", "held-5", "owner-5") // held-5 has a waiter: a hand-off
	release.FencingToken = token("held-5")
	extendHot := cmd(topics.OpExtend, "extend-hot", hot, "owner-2009")
	extendHot.ExtensionDuration = 30
	extendHot.FencingToken = token(hot)
	releaseHot := cmd(topics.OpRelease, "release-hot", hot, "owner-2009") // a hand-off to the first of queued waiters
	releaseHot.FencingToken = extendHot.FencingToken
	// The last of the hot lock's waiters gives up its wait (a withdrawal,
	// as the SDK sends for an Acquire given up after lock.queued), and one
	// before it extends (refused: it holds nothing): neither counts the
	// waiters ahead of it, which only an acquire's requeue answers with.
	withdrawDeep := cmd(topics.OpRelease, "withdraw-deep", hot, fmt.Sprintf("queue-%d", queueLen-1))
	extendDeep := cmd(topics.OpExtend, "extend-deep", hot, fmt.Sprintf("queue-%d", queueLen-2))
	extendDeep.ExtensionDuration = 30
	maxAge := 0.0
	cleanupNS := cmd(topics.OpCleanup, "cleanup", "", "")
	cleanupNS.Namespace, cleanupNS.MaxAgeSeconds = "tenant", &maxAge
	cleanupOne := cmd(topics.OpCleanup, "cleanup-one", "held-31", "")
	cleanupOne.MaxAgeSeconds = &maxAge
	revoke := cmd(topics.OpRevoke, "revoke", "held-41", "")
	revoke.Reason = "audit"
	open := cmd(topics.OpSessionOpen, "session-open", "", "session-owner")
	open.SessionID, open.TTL = "audit-session", 10
	inSession := cmd(topics.OpAcquire, "in-session", "fresh-session", "session-owner")
	inSession.SessionID = "audit-session"
	keepAlive := cmd(topics.OpSessionKeepAlive, "session-keepalive", "", "session-owner")
	keepAlive.SessionID = "audit-session"
	closeSession := cmd(topics.OpSessionClose, "session-close", "", "session-owner")
	closeSession.SessionID = "audit-session"
	batches := [][]topics.Command{
		{ // the common cases, sent ahead
			cmd(topics.OpAcquire, "free", "fresh-1", "alice"), shared, sem,
			cmd(topics.OpAcquire, "renew", "held-1", "owner-1"),
			cmd(topics.OpRelease, "release-common", "held-2", "owner-2"), extend, extendHot,
		},
		{ // the general path
			cmd(topics.OpAcquire, "held", "held-3", "bob"), queued, release,
			cmd(topics.OpRelease, "withdraw", "held-6", "waiter-6"),
			cmd(topics.OpQuery, "query", "held-7", ""), revoke, cleanupOne, cleanupNS,
			cmd(topics.OpRelease, "not-held", "held-8", "nobody"), releaseHot, withdrawDeep, extendDeep,
		},
		{open, inSession, keepAlive, closeSession},
		{cmd(topics.OpAcquire, "free", "fresh-1", "alice")}, // a repeated request_id: its stored outcome
	}
	applyBatches(t, conn.Pool, env, batches)
	var next string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT owner_id FROM lock_holders WHERE lock_name = $1`, hot).Scan(&next))
	require.Equal(t, "queue-0", next, "the release of %s handed it to the first of its waiters", hot)
	var deep bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM lock_waiters WHERE lock_name = $1 AND owner_id = $2)`,
		hot, withdrawDeep.OwnerID).Scan(&deep))
	require.False(t, deep, "%s withdrew its wait", withdrawDeep.OwnerID)
	// The expiry scheduler's and the periodic cleanup's statements.
	_, err := st.Pool.Exec(ctx, `UPDATE lock_holders SET expires_at = now() - interval '1 s' WHERE lock_name IN ('held-17', 'held-33')`)
	require.NoError(t, err)
	tx, err := conn.Pool.Begin(ctx)
	require.NoError(t, err)
	sweeps := env
	sweeps.Partition = 1 // held-17 and held-33's
	b := NewBatch(tx, sweeps)
	ended, _, err := b.ExpireDue(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, ended)
	_, _, _, err = b.CleanupIdle(ctx, 3600)
	require.NoError(t, err)
	_, err = NextDues(ctx, tx, []int32{1}) // a scheduler's read alone
	require.NoError(t, err)
	_, err = NextDues(ctx, tx, []int32{0, 1, 2, 3}) // the schedulers' merged read
	require.NoError(t, err)
	require.NoError(t, b.Flush(ctx))
	require.NoError(t, tx.Commit(ctx))

	seq := regexp.MustCompile(`Seq Scan on (locks|lock_holders|lock_waiters|processed_requests|lock_events|sessions)\b`)
	text := regexp.MustCompile(`(?s)Query Text: (.*?)\n(\S)`)
	var report []string
	nextDues := 0
	for _, p := range conn.Plans() {
		sql := "?"
		if m := text.FindStringSubmatch(p); m != nil {
			sql = strings.Join(strings.Fields(m[1]), " ")
		}
		if strings.HasPrefix(sql, "SET ") || strings.HasPrefix(sql, "LOAD ") || sql == "begin" || sql == "commit" {
			continue
		}
		pages, err := testdb.PlanPages(p)
		require.NoError(t, err, p)
		report = append(report, fmt.Sprintf("%6d pages  %.110s", pages, sql))
		require.False(t, seq.MatchString(p), "a statement scans a big table:\n%s", p)
		require.Less(t, pages, 500, "a statement reads %d pages:\n%s", pages, p)
		if strings.Contains(sql, "FROM unnest($1::int[]) WITH ORDINALITY AS p(id, n), LATERAL") {
			nextDues++
			for _, index := range []string{"lock_holders_expiry", "lock_waiters_deadline", "sessions_expiry", "locks_delay_by_partition"} {
				require.Contains(t, p, "Index Only Scan using "+index, "NextDues reads each partition's due times from its index:\n%s", p)
			}
		}
	}
	require.Equal(t, 2, nextDues, "NextDues of one partition and of four explained")
	slices.Sort(report)
	slices.Reverse(report)
	t.Logf("%d statements on %d held locks, %d waiters (%d on %s); most pages read first:\n%s", len(report), held, waiting, queueLen, hot,
		strings.Join(report, "\n"))
	require.Greater(t, len(report), 20, "auto_explain reported the batches' statements")
}

// applyBatches applies each of batches in a transaction of its own, as the
// worker's applier does (applyBatch).
func applyBatches(t *testing.T, pool *pgxpool.Pool, env Env, batches [][]topics.Command) {
	t.Helper()
	for _, cmds := range batches {
		require.NoError(t, applyBatch(context.Background(), pool, env, cmds))
	}
}

// applyBatch applies cmds in a transaction of its own on pool, as the
// worker's applier does a batch: the prefetch and the common cases sent
// ahead, then each command. It asserts nothing: any goroutine may call it.
func applyBatch(ctx context.Context, pool *pgxpool.Pool, env Env, cmds []topics.Command) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b := NewBatch(tx, env)
		pb := &pgx.Batch{}
		ids := make([]string, len(cmds))
		for i, c := range cmds {
			ids[i] = c.RequestID
		}
		b.QueuePrefetch(pb, ids)
		b.QueueAtOnce(pb, cmds, nil)
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return err
		}
		for _, c := range cmds {
			if _, err := b.Apply(ctx, c, time.Now()); err != nil {
				return fmt.Errorf("%s: %w", c.RequestID, err)
			}
		}
		return b.Flush(ctx)
	})
}

// fillLarge gives the schema `held` locks held by one owner each (held-N by
// owner-N, in partitions 0-15; every tenth in namespace tenant), written by
// the grant statement itself; as many stored outcomes; a tenth as many
// sessions; and a waiter on each of the first `waiting` locks (waiter-N),
// copies of one; then analyzes it, when analyze.
func fillLarge(t *testing.T, pool *pgxpool.Pool, held, waiting int, analyze bool) {
	t.Helper()
	ctx := context.Background()
	const chunk = 10_000
	for from := 0; from < held; from += chunk {
		g := &grantArgs{}
		for i := from; i < min(from+chunk, held); i++ {
			ns := ""
			if i%10 == 0 {
				ns = "tenant"
			}
			g.ns, g.name, g.owner = append(g.ns, ns), append(g.name, fmt.Sprintf("held-%d", i)), append(g.owner, fmt.Sprintf("owner-%d", i))
			g.replyTo, g.requestID = append(g.replyTo, "locks.replies.fill"), append(g.requestID, fmt.Sprintf("fill-%d", i))
			g.lease, g.metadata, g.partition = append(g.lease, 3600), append(g.metadata, nil), append(g.partition, int32(i%16))
			g.mode, g.limit = append(g.mode, "exclusive"), append(g.limit, 1)
			g.lockDelay, g.maxHold = append(g.lockDelay, 0), append(g.maxHold, 0)
		}
		rows, err := pool.Query(ctx, grantAtOnceSQL, g.ns, g.name, g.owner, g.lease, g.metadata, g.replyTo, g.requestID, g.partition, g.mode, g.limit, g.lockDelay, g.maxHold)
		require.NoError(t, err)
		rows.Close()
		require.NoError(t, rows.Err())
	}
	_, err := pool.Exec(ctx, `INSERT INTO processed_requests (request_id, outcome, reply_to)
		SELECT 'fill-' || g, '\x00'::bytea, 'locks.replies.fill' FROM generate_series(0, $1 - 1) g`, held)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
		SELECT 'fill-session-' || g, 'session-owner-' || g, 60, now() + interval '1 hour', 'locks.replies.fill', g % 16 FROM generate_series(0, $1 / 10 - 1) g`, held)
	require.NoError(t, err)
	// One waiter, copied onto the other locks with every column not named
	// here as it is, whatever columns later migrations add.
	_, err = pool.Exec(ctx, `INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition, reply_to)
		VALUES ('', 'held-1', 'waiter-1', 'wait-1', 30, now() + interval '1 hour', 1, 'locks.replies.fill')`)
	require.NoError(t, err)
	var cols []string
	rows, err := pool.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'lock_waiters' AND column_name <> 'id' ORDER BY ordinal_position`)
	require.NoError(t, err)
	cols, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	sel := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "namespace":
			sel[i] = `CASE WHEN g % 10 = 0 THEN 'tenant' ELSE '' END`
		case "lock_name":
			sel[i] = `'held-' || g`
		case "owner_id":
			sel[i] = `'waiter-' || g`
		case "request_id":
			sel[i] = `'wait-' || g`
		case "source_partition":
			sel[i] = `g % 16`
		default:
			sel[i] = pgx.Identifier{c}.Sanitize()
		}
	}
	_, err = pool.Exec(ctx, fmt.Sprintf(`INSERT INTO lock_waiters (%s) SELECT %s FROM lock_waiters, generate_series(2, $1 - 1) g WHERE lock_name = 'held-1'`,
		strings.Join(cols, ", "), strings.Join(sel, ", ")), waiting)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE locks SET waiter_count = 1 WHERE lock_name IN (SELECT lock_name FROM lock_waiters)`)
	require.NoError(t, err)
	if !analyze {
		return
	}
	// This schema's tables alone: a bare ANALYZE takes every table of the
	// database, other tests' too, and waits (past lock_timeout) for one a
	// test running beside is altering or dropping.
	var tables string
	require.NoError(t, pool.QueryRow(ctx, `SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables WHERE schemaname = current_schema()`).Scan(&tables))
	_, err = pool.Exec(ctx, `ANALYZE `+tables)
	require.NoError(t, err)
}

// fillQueue queues n waiters (queue-0 ... queue-<n-1>, in that order, in
// partitions 0-15) on lock, one of fillLarge's, copies of its waiter-1,
// then analyzes lock_waiters, when analyze.
func fillQueue(t *testing.T, pool *pgxpool.Pool, lock string, n int, analyze bool) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT column_name FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = 'lock_waiters' AND column_name <> 'id' ORDER BY ordinal_position`)
	require.NoError(t, err)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	sel := make([]string, len(cols))
	for i, c := range cols {
		switch c {
		case "namespace":
			sel[i] = `''`
		case "lock_name":
			sel[i] = `$2`
		case "owner_id":
			sel[i] = `'queue-' || g`
		case "request_id":
			sel[i] = `'queue-wait-' || g`
		case "source_partition":
			sel[i] = `g % 16`
		default:
			sel[i] = pgx.Identifier{c}.Sanitize()
		}
	}
	_, err = pool.Exec(ctx, fmt.Sprintf(`INSERT INTO lock_waiters (%s) SELECT %s FROM lock_waiters, generate_series(0, $1 - 1) g
		WHERE lock_name = 'held-1' ORDER BY g`, strings.Join(cols, ", "), strings.Join(sel, ", ")), n, lock)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `UPDATE locks SET waiter_count = (SELECT count(*) FROM lock_waiters WHERE namespace = '' AND lock_name = $1)
		WHERE namespace = '' AND lock_name = $1`, lock)
	require.NoError(t, err)
	if analyze {
		_, err = pool.Exec(ctx, `ANALYZE lock_waiters`)
		require.NoError(t, err)
	}
}
