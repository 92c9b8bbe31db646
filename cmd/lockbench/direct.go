package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// ---- 5 cleanup ----------------------------------------------------------

// CleanupCase is one measured cleanup.
type CleanupCase struct {
	Kind  string `json:"kind"`
	Locks int    `json:"locks"`
	// Commands is how many cleanup commands it took: each does at most
	// handlers.MaxCleanup, and is sent again while its answer says more.
	Commands int `json:"commands"`
	// EndToEnd is from producing the first cleanup command to reading the
	// last one's lock.cleaned; WorkerMS is the answers' duration_ms (poll
	// to commit), added up; DirectMS is the same handler straight on
	// PostgreSQL (no Kafka), a transaction a command, on a fresh schema.
	EndToEndMS float64 `json:"end_to_end_ms"`
	WorkerMS   float64 `json:"worker_duration_ms"`
	DirectMS   float64 `json:"direct_transaction_ms"`
	Cleaned    int     `json:"cleaned_count"`
	// DrainSeconds is how long the relay then took to publish the records
	// the cleanup caused (ended leases: lock.expired to holder and
	// lifecycle topic, and the lock's state).
	DrainSeconds float64 `json:"outbox_drain_seconds,omitempty"`
	OutboxRows   int64   `json:"outbox_rows_drained,omitempty"`
}

// Cleanup kinds: rows of leases ended long ago (deleted by cleanup), and
// leases past expires_at that nobody has ended yet (cleanup ends each,
// with lock.expired; their source partition is one no worker watches, so
// the expiry scheduler does not race it).
const (
	kindIdle  = "expired rows (deleted)"
	kindEnded = "ended leases (expired now)"
)

func seed(ctx context.Context, st *store.Store, kind, namespace string, n int, replyTo string) error {
	var sql string
	switch kind {
	case kindIdle:
		sql = `INSERT INTO locks (namespace, lock_name, status, ended_owner_id, ended_mode, ended_fencing_token, ended_acquired_at,
				ended_expires_at, ended_lease_duration, acquisition_count, source_partition, updated_at)
			SELECT $1, 'c' || i, 'expired', 'cleanup-owner', 'exclusive', nextval('fencing_tokens'), now() - interval '3 hours',
				now() - interval '2 hours', 3600, 1, -1, now() - interval '2 hours'
			FROM generate_series(1, $2::int) i WHERE $3::text IS NOT NULL`
	default:
		sql = `WITH l AS (
				INSERT INTO locks (namespace, lock_name, status, holder_count, acquisition_count, source_partition, updated_at)
				SELECT $1, 'c' || i, 'acquired', 1, 1, -1, now() - interval '2 minutes' FROM generate_series(1, $2::int) i
				RETURNING namespace, lock_name)
			INSERT INTO lock_holders (namespace, lock_name, owner_id, mode, fencing_token, acquired_at, expires_at, lease_duration,
				reply_to, source_partition)
			SELECT namespace, lock_name, 'cleanup-owner', 'exclusive', nextval('fencing_tokens'), now() - interval '2 minutes',
				now() - interval '1 minute', 60, $3, -1
			FROM l`
	}
	_, err := st.Pool.Exec(ctx, sql, namespace, n, replyTo)
	if err != nil {
		return fmt.Errorf("seeding %d locks: %w", n, err)
	}
	_, err = st.Pool.Exec(ctx, `ANALYZE locks, lock_holders`)
	return err
}

// cleanupCmd cleans every lock of namespace ("*" sweeps the command's
// namespace only).
func cleanupCmd(rid, namespace string) topics.Command {
	age := 3600.0
	return topics.Command{RequestID: rid, Operation: topics.OpCleanup, Namespace: namespace, LockName: topics.CleanupAll, MaxAgeSeconds: &age}
}

func (b *bench) cleanup(ctx context.Context, direct *store.Store) ([]CleanupCase, error) {
	var out []CleanupCase
	for _, n := range b.cfg.CleanupSizes {
		for _, kind := range []string{kindIdle, kindEnded} {
			if kind == kindEnded && n > b.cfg.CleanupEndedMax {
				continue // each ended lease is two events for the relay: minutes at 100,000
			}
			cs := CleanupCase{Kind: kind, Locks: n}
			if b.t.st != nil {
				ns := b.rid("clean", n, len(out))
				if err := seed(ctx, b.t.st, kind, ns, n, b.d.reply); err != nil {
					return out, err
				}
				b.quiesce(ctx, fmt.Sprintf("seeding %d %s for cleanup", n, kind), time.Minute)
				start := time.Now()
				for more := true; more; {
					if cs.Commands++; cs.Commands > n/handlers.MaxCleanup+10 { // a lock held for long: no end in sight
						return out, fmt.Errorf("cleaning %d locks: still more after %d commands", n, cs.Commands-1)
					}
					r, err := b.d.call(ctx, cleanupCmd(b.rid("clean", n, len(out), cs.Commands), ns), 5*time.Minute)
					if err != nil {
						return out, err
					}
					cs.EndToEndMS = ms(r.at.Sub(start))
					if r.ev.DurationMS != nil {
						cs.WorkerMS += *r.ev.DurationMS
					}
					if r.ev.CleanedCount != nil {
						cs.Cleaned += *r.ev.CleanedCount
					}
					more = r.ev.More
				}
				// The relay publishes the events in id order, the answer
				// last: what the end-to-end time has beyond the worker's
				// transaction is the relay draining them.
				if kind == kindEnded {
					cs.OutboxRows = int64(3*n + 1) // per lease: lock.expired twice, the lock's state; the answer
					cs.DrainSeconds = (cs.EndToEndMS - cs.WorkerMS) / 1000
				}
				b.quiesce(ctx, fmt.Sprintf("5 cleanup of %d %s", n, kind), 10*time.Minute)
			}
			if direct != nil {
				d, err := directCleanup(ctx, direct, kind, b.rid("dclean", n, len(out)), n)
				if err != nil {
					return out, err
				}
				cs.DirectMS = ms(d)
			}
			out = append(out, cs)
		}
	}
	return out, nil
}

// directCleanup seeds n locks in the direct schema and times the cleanup
// handler's transaction, as the worker runs it (offset row locked first).
func directCleanup(ctx context.Context, st *store.Store, kind, ns string, n int) (time.Duration, error) {
	if err := seed(ctx, st, kind, ns, n, "locks.replies.lockbench-direct"); err != nil {
		return 0, err
	}
	env := handlers.Env{Names: topics.DefaultNames(), Source: "lockworker/lockbench", Partition: 0}
	start := time.Now()
	for i, more := 0, true; more; i++ {
		if i > n/handlers.MaxCleanup+10 {
			return 0, fmt.Errorf("cleaning %d locks: still more after %d commands", n, i)
		}
		err := st.InTx(ctx, func(tx pgx.Tx) error {
			if _, err := store.LockOffset(ctx, tx, "lockbench-direct", "cleanup", 0); err != nil {
				return err
			}
			batch := handlers.NewBatch(tx, env)
			c := cleanupCmd(fmt.Sprint(ns, "-", i), ns)
			c.ReplyTo = "locks.replies.lockbench-direct"
			evs, err := batch.Apply(ctx, c, start)
			if err != nil {
				return err
			}
			more = slices.ContainsFunc(evs, func(e topics.Event) bool { return e.Type == topics.TypeCleaned && e.More })
			return batch.Flush(ctx)
		})
		if err != nil {
			return 0, err
		}
	}
	took := time.Since(start)
	// Keep the direct schema small for the next case.
	_, err := st.Pool.Exec(ctx, `TRUNCATE outbox, lock_events, processed_requests`)
	if err == nil {
		if _, err = st.Pool.Exec(ctx, `DELETE FROM lock_holders WHERE namespace = $1`, ns); err == nil {
			_, err = st.Pool.Exec(ctx, `DELETE FROM locks WHERE namespace = $1`, ns)
		}
	}
	return took, err
}

// ---- 6 ceiling ----------------------------------------------------------

// CeilingResult is scenario 6: the worker's SQL (handlers.NewBatch,
// QueuePrefetch, QueueAtOnce, Apply, Flush, with an offset row locked and
// advanced) applied straight to PostgreSQL by as many goroutines as the
// worker has appliers, without Kafka.
type CeilingResult struct {
	Label        string  `json:"label"`
	Transactions int     `json:"transactions_at_once"`
	Batch        int     `json:"batch_commands"`
	PoolConns    int     `json:"pool_connections"`
	Seconds      float64 `json:"seconds"`
	Commands     int64   `json:"commands"`
	PerSecond    float64 `json:"commands_per_second"`
	BatchTx      dist    `json:"batch_transaction"`
	CPU          cpuUse  `json:"cpu"`
}

// ceilingRun is a ceiling run's commands per batch and its label.
type ceilingRun struct {
	batch int
	label string
}

// ceilingRuns are the ceiling's runs: scenario 1's batching, or
// --ceiling-batch's in its place (labelled so: the ceiling-fraction goal is
// not judged against it), then large batches unless that is the same batch.
func ceilingRuns(cfg *Config) []ceilingRun {
	first := ceilingRun{cfg.sameBatching(), "same batching as scenario 1"}
	if cfg.CeilingBatch != 0 && cfg.CeilingBatch != first.batch {
		first = ceilingRun{cfg.CeilingBatch, fmt.Sprintf("--ceiling-batch %d", cfg.CeilingBatch)}
	}
	if cfg.CeilingBigBatch == first.batch {
		return []ceilingRun{first}
	}
	return []ceilingRun{first, {cfg.CeilingBigBatch, "large batches"}}
}

// sameBatching is the ceiling's batch that batches as scenario 1's worker
// does: the closed loop's clients shared among its appliers.
func (c *Config) sameBatching() int { return max(2, c.Clients/c.CeilingAppliers) }

func ceiling(ctx context.Context, st *store.Store, pg *postmaster, label string, appliers, batchSize int, dur time.Duration, poolConns int, run string) (CeilingResult, error) {
	res := CeilingResult{Label: label, Transactions: appliers, Batch: batchSize, PoolConns: poolConns}
	half := max(batchSize/2, 1)
	var done atomic.Int64
	h := newHist()
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(dur)
	cpu0 := takeCPU(nil, nil, pg)
	var wg sync.WaitGroup
	for g := range appliers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			env := handlers.Env{Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/lockbench", Partition: int32(g)}
			reply := "locks.replies.lockbench-ceiling"
			lock := func(slot int) string { return fmt.Sprintf("%s-ceil-%d-%d-%d", run, batchSize, g, slot) }
			var expected int64 = -2 // the stored offset, once read
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				// Batch i acquires one half of the slots and releases the
				// other half (acquired by batch i-1), as the closed loop does.
				cmds := make([]topics.Command, 0, 2*half)
				acqBase, relBase := (i%2)*half, ((i+1)%2)*half
				for k := range half {
					cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("%s-ca-%d-%d-%d-%d", run, batchSize, g, i, k), Operation: topics.OpAcquire,
						LockName: lock(acqBase + k), OwnerID: "ceiling", LeaseDuration: 60, ReplyTo: reply})
					if i > 0 {
						cmds = append(cmds, topics.Command{RequestID: fmt.Sprintf("%s-cr-%d-%d-%d-%d", run, batchSize, g, i, k), Operation: topics.OpRelease,
							LockName: lock(relBase + k), OwnerID: "ceiling", ReplyTo: reply})
					}
				}
				ids := make([]string, len(cmds))
				for k, c := range cmds {
					ids[k] = c.RequestID
				}
				start := time.Now()
				// As the worker's applyTx: the offset is read once (in a
				// round trip of its own, with BEGIN), then locked and
				// advanced in the first round trip with BEGIN, the prefetch
				// and the common cases sent ahead; the writes go with COMMIT.
				var next int64
				err := st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
					stored, pb := expected, first
					if stored == -2 {
						store.QueueLockOffset(first, "lockbench-ceiling", run, int32(g), &stored)
						if err := tx.SendBatch(ctx, first).Close(); err != nil {
							return err
						}
						pb = &pgx.Batch{}
					}
					next = max(stored, 0) + int64(len(cmds))
					batch := handlers.NewBatch(tx, env)
					store.QueueAdvanceOffset(pb, "lockbench-ceiling", run, int32(g), stored, next, -1)
					batch.QueuePrefetch(pb, ids)
					batch.QueueAtOnce(pb, cmds, nil)
					if err := tx.SendBatch(ctx, pb).Close(); err != nil {
						return err
					}
					for _, c := range cmds {
						if _, err := batch.Apply(ctx, c, start); err != nil {
							return err
						}
					}
					return batch.QueueFlush(ctx, last)
				})
				if err == nil {
					expected = next
				}
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						errOnce.Do(func() { firstErr = err })
					}
					return
				}
				h.add(time.Since(start))
				done.Add(int64(len(cmds)))
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil && firstErr == nil {
		return res, fmt.Errorf("cut short: %w", err) // not the whole run's figures
	}
	res.CPU = cpuBetween(cpu0, takeCPU(nil, nil, pg))
	res.Seconds = res.CPU.Seconds
	res.Commands = done.Load()
	res.PerSecond = float64(res.Commands) / res.Seconds
	res.BatchTx = h.dist()
	return res, firstErr
}

// truncateDirect empties the direct schema's lock tables between runs.
func truncateDirect(ctx context.Context, st *store.Store) error {
	_, err := st.Pool.Exec(ctx, `TRUNCATE lock_holders, lock_waiters, locks, lock_events, outbox, processed_requests, consumer_offsets`)
	return err
}
