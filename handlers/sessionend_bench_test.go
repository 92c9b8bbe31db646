package handlers_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/procstat"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// BenchmarkSessionEnd: the end of a session holding 10,000 leases, one lock
// each, seeded in SQL before each transaction: by its close, applied the
// worker's way (applyAsWorker), and by the expiry step once it is past its
// expiry. Run it with -benchtime=Nx: an end takes about a second. It
// reports the CPU time of the PostgreSQL backend too (its one connection's,
// from /proc when the server is local), which a busy machine moves less
// than the wall clock.
func BenchmarkSessionEnd(b *testing.B) {
	st := testdb.NewWith(b, store.Config{MaxConns: 1})
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	ctx := context.Background()
	const size = 10_000
	const seed = `
		WITH s AS (
			INSERT INTO sessions (id, owner_id, ttl, expires_at, reply_to, source_partition)
			VALUES ($2, 'holder', 10, now() + make_interval(secs => $3), 'locks.replies.bench', 0)),
		l AS (
			INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition)
			SELECT '', $2 || '-' || i, 'acquired', 1, 1, 0 FROM generate_series(1, $1::int) i RETURNING lock_name)
		INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, lease_duration, source_partition,
			session_id, reply_to)
		SELECT '', lock_name, 'holder', 'exclusive', nextval('fencing_tokens'), now(), 10, 0, $2, 'locks.replies.bench' FROM l`
	for _, end := range []string{"close", "expiry"} {
		b.Run(fmt.Sprintf("%s/leases=%d", end, size), func(b *testing.B) {
			var expected int64 = -2
			var pid int
			if err := st.Pool.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid); err != nil {
				b.Fatal(err)
			}
			var cpu time.Duration
			i := 0
			for b.Loop() {
				b.StopTimer()
				id := fmt.Sprintf("%s-%d", end, i)
				ttl := 60.0
				if end == "expiry" {
					ttl = -1
				}
				if _, err := st.Pool.Exec(ctx, seed, size, id, ttl); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				before := backendCPU(pid)
				if end == "close" {
					applyAsWorker(b, st, env, []topics.Command{{Operation: topics.OpSessionClose, RequestID: id + "-close", OwnerID: "holder",
						SessionID: id, ReplyTo: "locks.replies.bench"}}, &expected, 7)
				} else {
					expireDue(b, st, env)
				}
				b.StopTimer()
				cpu += backendCPU(pid) - before
				var left int64
				if err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM lock_holders`).Scan(&left); err != nil || left != 0 {
					b.Fatalf("%d holders left (%v)", left, err)
				}
				if _, err := st.Pool.Exec(ctx, `TRUNCATE outbox, lock_events, processed_requests`); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				i++
			}
			b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "server-cpu-ms/op")
		})
	}
}

// backendCPU is the CPU time (user and system) of the local PostgreSQL
// backend pid so far, 0 when /proc does not show it.
func backendCPU(pid int) time.Duration {
	s, err := procstat.Read(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	return s.Own
}
