package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// BenchmarkBatch applies one poll batch the way the worker does (the offset
// row locked and advanced, the outcomes prefetched and the common cases sent
// ahead in one round trip, Apply each command, Flush, commit) on a
// real PostgreSQL: half the commands acquire free locks, half release the
// locks the previous batch acquired, as a closed loop of clients does.
// cmds/s is for one goroutine; the worker runs one per partition.
func BenchmarkBatch(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	for _, size := range []int{2, 16, 100, 1000} {
		b.Run(fmt.Sprintf("commands=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			half := size / 2
			reply := "locks.replies.bench"
			i := 0
			var expected int64 = -2 // the stored offset, once read
			for b.Loop() {
				cmds := make([]topics.Command, 0, size)
				acqBase, relBase := (i%2)*half, ((i+1)%2)*half
				for k := range half {
					cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("a-%d-%d-%d", size, i, k), Operation: topics.OpAcquire,
						LockName: fmt.Sprintf("bench-%d-%d", size, acqBase+k), OwnerID: "bench", LeaseDuration: 60, ReplyTo: reply})
					cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("r-%d-%d-%d", size, i, k), Operation: topics.OpRelease,
						LockName: fmt.Sprintf("bench-%d-%d", size, relBase+k), OwnerID: "bench", ReplyTo: reply})
				}
				applyAsWorker(b, st, env, cmds, &expected, int32(size))
				i++
			}
			batchesDone(b, st, size)
		})
	}
}

// batchesDone reports a batch benchmark's commands/s and empties the
// outbox, which the relay would have published and deleted.
func batchesDone(b *testing.B, st *store.Store, size int) {
	b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "cmds/s")
	b.StopTimer()
	if _, err := st.Pool.Exec(context.Background(), `TRUNCATE outbox`); err != nil {
		b.Fatal(err)
	}
	b.StartTimer()
}

// BenchmarkBatchPairs: batches in which each lock is acquired and then
// released by its holder, as a backlog holds them after an outage: the
// release goes ahead after its acquire (releaseAfterSQL).
func BenchmarkBatchPairs(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("commands=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			reply := "locks.replies.bench"
			i := 0
			var expected int64 = -2
			for b.Loop() {
				cmds := make([]topics.Command, 0, size)
				for k := range size / 2 {
					lock := fmt.Sprintf("pair-%d-%d-%d", size, i, k)
					cmds = append(cmds,
						topics.Command{RequestID: lock + "-a", Operation: topics.OpAcquire, LockName: lock, OwnerID: "bench", LeaseDuration: 60, ReplyTo: reply},
						topics.Command{RequestID: lock + "-r", Operation: topics.OpRelease, LockName: lock, OwnerID: "bench", ReplyTo: reply})
				}
				applyAsWorker(b, st, env, cmds, &expected, int32(size)+1)
				i++
			}
			batchesDone(b, st, size)
		})
	}
}

// BenchmarkBatchExtend: batches of extends of held leases, the keep-alives
// of clients holding locks (the SDK extends every third of a lease).
func BenchmarkBatchExtend(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	const size = 100
	reply := "locks.replies.bench"
	var expected int64 = -2
	cmds := make([]topics.Command, size)
	for k := range size {
		cmds[k] = topics.Command{RequestID: fmt.Sprintf("held-%d", k), Operation: topics.OpAcquire,
			LockName: fmt.Sprintf("held-%d", k), OwnerID: "bench", LeaseDuration: 3600, ReplyTo: reply}
	}
	applyAsWorker(b, st, env, cmds, &expected, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for k := range size {
			cmds[k] = topics.Command{RequestID: fmt.Sprintf("x-%d-%d", i, k), Operation: topics.OpExtend,
				LockName: fmt.Sprintf("held-%d", k), OwnerID: "bench", ExtensionDuration: 1, ReplyTo: reply}
		}
		applyAsWorker(b, st, env, cmds, &expected, 0)
		i++
	}
	b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "cmds/s")
}

// applyAsWorker applies cmds in one transaction as the worker's applier does:
// the offset row locked (once) and advanced, the outcomes prefetched and the
// common cases sent ahead in one round trip, Apply each command, Flush,
// commit.
func applyAsWorker(b *testing.B, st *store.Store, env handlers.Env, cmds []topics.Command, expected *int64, partition int32) {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, len(cmds))
	for k, c := range cmds {
		ids[k] = c.RequestID
	}
	var next int64
	err := st.InTx(ctx, func(tx pgx.Tx) error {
		stored := *expected
		if stored == -2 {
			var err error
			if stored, err = store.LockOffset(ctx, tx, "bench", "commands", partition); err != nil {
				return err
			}
		}
		next = max(stored, 0) + int64(len(cmds))
		batch := handlers.NewBatch(tx, env)
		first := &pgx.Batch{}
		store.QueueAdvanceOffset(first, "bench", "commands", partition, stored, next, -1)
		batch.QueuePrefetch(first, ids)
		batch.QueueAtOnce(first, cmds, nil)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		now := time.Now()
		for _, c := range cmds {
			if _, err := batch.Apply(ctx, c, now); err != nil {
				return err
			}
		}
		return batch.Flush(ctx)
	})
	if err != nil {
		b.Fatal(err)
	}
	*expected = next
}

// holdersRun numbers BenchmarkHolders' rounds, so request_ids stay new.
var holdersRun int

// BenchmarkHolders: 100 owners acquire, then release, in batches of 100,
// either one lock each in exclusive mode (the common cases) or one lock
// together in shared mode (the target: at most twice the cost per
// command of the exclusive case).
func BenchmarkHolders(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	const size = 100
	reply := "locks.replies.bench"
	for _, mode := range []string{topics.ModeExclusive, topics.ModeShared} {
		b.Run("mode="+mode, func(b *testing.B) {
			var expected int64 = -2
			partition := int32(len(mode))
			for b.Loop() {
				for _, op := range []string{topics.OpAcquire, topics.OpRelease} {
					cmds := make([]topics.Command, size)
					for k := range size {
						lock := fmt.Sprintf("x-%d", k)
						if mode == topics.ModeShared {
							lock = "shared"
						}
						cmds[k] = topics.Command{RequestID: fmt.Sprintf("%s-%s-%d-%d", mode, op, holdersRun, k), Operation: op, LockName: lock,
							OwnerID: fmt.Sprintf("o-%d", k), ReplyTo: reply}
						if op == topics.OpAcquire {
							cmds[k].Mode, cmds[k].LeaseDuration = mode, 60
						}
					}
					applyAsWorker(b, st, env, cmds, &expected, partition)
				}
				holdersRun++
			}
			b.ReportMetric(float64(2*size*b.N)/b.Elapsed().Seconds(), "cmds/s")
		})
	}
}

// BenchmarkExpireDue: the expiry step ending what fell due together, 1,000
// locks' worth (MaxSweep), seeded in SQL before each transaction: leases
// past expires_at, waiters past their deadline (LOCK_TIMEOUT, the lock held
// on), one session that held all of them, and as many sessions of one lock
// each.
func BenchmarkExpireDue(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	ctx := context.Background()
	const size = handlers.MaxSweep
	seeds := []struct{ name, sql string }{
		{"leases", `
			WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
				SELECT '', $2 || i, 'acquired', 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
			SELECT '', lock_name, 'gone', 'exclusive', nextval('fencing_tokens'), now() - interval '1 minute', now() - interval '1 second', 60, 0 FROM l`},
		{"timeouts", `
			WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, waiter_count, acquisition_count, source_partition)
				SELECT '', $2 || i, 'acquired', 1, 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name),
			h AS (
				INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration, source_partition)
				SELECT '', lock_name, 'holder', 'exclusive', nextval('fencing_tokens'), now(), now() + interval '1 hour', 3600, 0 FROM l)
			INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, reply_to, deadline, source_partition)
			SELECT '', lock_name, 'waiter', 'w-' || lock_name, 60, 'locks.replies.bench', now() - interval '1 second', 0 FROM l`},
		{"session", `
			WITH s AS (
				INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
				VALUES ($2, 'holder', 10, now() - interval '1 second', 'locks.replies.bench', 0)),
			l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
				SELECT '', $2 || i, 'acquired', 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, lease_duration, source_partition, session_id)
			SELECT '', lock_name, 'holder', 'exclusive', nextval('fencing_tokens'), now(), 10, 0, $2 FROM l`},
		{"sessions", `
			WITH s AS (
				INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
				SELECT $2 || i, 'holder', 10, now() - interval '1 second', 'locks.replies.bench', 0 FROM generate_series(1, $1::int) i
				RETURNING id),
			l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
				SELECT '', id, 'acquired', 1, 1, 0 FROM s RETURNING lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, lease_duration, source_partition, session_id)
			SELECT '', lock_name, 'holder', 'exclusive', nextval('fencing_tokens'), now(), 10, 0, lock_name FROM l`},
	}
	for _, seed := range seeds {
		b.Run(seed.name+"=1000", func(b *testing.B) {
			i := 0
			for b.Loop() {
				b.StopTimer()
				if _, err := st.Pool.Exec(ctx, seed.sql, size, fmt.Sprintf("%s-%d-", seed.name, i)); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				expireDue(b, st, env)
				i++
			}
			b.StopTimer()
			var left int64
			if err := st.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM lock_holders WHERE owner_id = 'gone' OR session_id IS NOT NULL)
				+ (SELECT count(*) FROM lock_waiters)`).Scan(&left); err != nil {
				b.Fatal(err)
			}
			if left != 0 {
				b.Fatalf("%d holders or waiters left due", left)
			}
			if _, err := st.Pool.Exec(ctx, `TRUNCATE outbox, lock_events, processed_requests, lock_holders, lock_waiters, locks, sessions`); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "locks/s")
		})
	}
}

// expireDue runs the expiry step once, in a transaction of its own.
func expireDue(b *testing.B, st *store.Store, env handlers.Env) {
	ctx := context.Background()
	if err := st.InTx(ctx, func(tx pgx.Tx) error {
		batch := handlers.NewBatch(tx, env)
		if _, _, err := batch.ExpireDue(ctx); err != nil {
			return err
		}
		return batch.Flush(ctx)
	}); err != nil {
		b.Fatal(err)
	}
}
