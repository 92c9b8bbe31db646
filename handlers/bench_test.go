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

// BenchmarkBatch applies one poll batch the way the worker does (offset row
// locked, Prefetch, Apply each command, Flush, offset advanced, commit) on a
// real PostgreSQL: half the commands acquire free locks, half release the
// locks the previous batch acquired, as a closed loop of clients does.
// cmds/s is for one goroutine; the worker runs one per partition.
func BenchmarkBatch(b *testing.B) {
	st := testdb.New(b)
	env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/bench"}
	ctx := context.Background()
	for _, size := range []int{2, 16, 100, 1000} {
		b.Run(fmt.Sprintf("commands=%d", size), func(b *testing.B) {
			b.ReportAllocs()
			half := size / 2
			reply := "locks.replies.bench"
			i := 0
			for b.Loop() {
				cmds := make([]topics.Command, 0, size)
				acqBase, relBase := (i%2)*half, ((i+1)%2)*half
				for k := range half {
					cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("a-%d-%d-%d", size, i, k), Operation: topics.OpAcquire,
						LockName: fmt.Sprintf("bench-%d-%d", size, acqBase+k), OwnerID: "bench", LeaseDuration: 60, ReplyTo: reply})
					cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("r-%d-%d-%d", size, i, k), Operation: topics.OpRelease,
						LockName: fmt.Sprintf("bench-%d-%d", size, relBase+k), OwnerID: "bench", ReplyTo: reply})
				}
				ids := make([]string, len(cmds))
				for k, c := range cmds {
					ids[k] = c.RequestID
				}
				err := st.InTx(ctx, func(tx pgx.Tx) error {
					stored, err := store.LockOffset(ctx, tx, "bench", "commands", 0)
					if err != nil {
						return err
					}
					batch := handlers.NewBatch(tx, env)
					if err := batch.Prefetch(ctx, ids); err != nil {
						return err
					}
					now := time.Now()
					for _, c := range cmds {
						if _, err := batch.Apply(ctx, c, now); err != nil {
							return err
						}
					}
					if err := batch.Flush(ctx); err != nil {
						return err
					}
					return store.AdvanceOffset(ctx, tx, "bench", "commands", 0, stored, max(stored, 0)+int64(len(cmds)))
				})
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
			b.ReportMetric(float64(size*b.N)/b.Elapsed().Seconds(), "cmds/s")
			b.StopTimer()
			// The relay would have published and deleted these.
			if _, err := st.Pool.Exec(ctx, `TRUNCATE outbox`); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		})
	}
}
