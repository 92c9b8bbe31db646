package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// churn leaves dead row versions in the hot tables, as commands do: locks
// updated over and over, outbox rows inserted and deleted, the offset row
// advanced by every batch.
func churn(t *testing.T, st *store.Store, rounds int) {
	t.Helper()
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `INSERT INTO locks (lock_name, status, source_partition)
		SELECT 'churn-' || i, 'released', 0 FROM generate_series(1, 64) i ON CONFLICT DO NOTHING`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('g', 't', 0, 0) ON CONFLICT DO NOTHING`)
	require.NoError(t, err)
	for range rounds {
		b := &pgx.Batch{}
		b.Queue(`UPDATE locks SET updated_at = clock_timestamp(), acquisition_count = acquisition_count + 1`)
		b.Queue(`INSERT INTO outbox (source_partition, topic, value) SELECT 0, 't', '\x00' FROM generate_series(1, 64)`)
		b.Queue(`DELETE FROM outbox`)
		b.Queue(`UPDATE consumer_offsets SET next_offset = next_offset + 1`)
		require.NoError(t, st.Pool.SendBatch(ctx, b).Close())
	}
}

// waitStats waits until table's statistics satisfy ok (backends report
// them up to a second late) and returns them.
func waitStats(t *testing.T, st *store.Store, table string, ok func(store.TableStats) bool) store.TableStats {
	t.Helper()
	var last store.TableStats
	require.Eventually(t, func() bool {
		stats, err := st.ReadTableStats(context.Background())
		require.NoError(t, err)
		for _, s := range stats {
			if s.Table == table {
				last = s
				return ok(s)
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "statistics of %s: %+v", table, &last)
	return last
}

func TestReadTableStats(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	stats, err := st.ReadTableStats(context.Background())
	require.NoError(t, err)
	var names []string
	for _, s := range stats {
		names = append(names, s.Table)
	}
	require.Equal(t, store.HotTables, names, "every hot table of the worker's own schema, in order")
	set, err := st.ReadVacuumSettings(context.Background())
	require.NoError(t, err)
	t.Logf("this server: %+v", set)
}

func TestVacuumClearsDeadRows(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	churn(t, st, 50) // 3,200 dead versions in locks and outbox each
	for _, table := range []string{"locks", "outbox", "consumer_offsets"} {
		waitStats(t, st, table, func(s store.TableStats) bool { return s.DeadRows > 0 })
	}
	ran, err := st.Vacuum(context.Background(), store.HotTables)
	require.NoError(t, err)
	require.True(t, ran)
	for _, table := range []string{"locks", "outbox", "consumer_offsets"} {
		waitStats(t, st, table, func(s store.TableStats) bool { return s.LastVacuum != nil })
	}
	// The VACUUM counted the rows for the planner: churn's 64 locks.
	waitStats(t, st, "locks", func(s store.TableStats) bool { return s.StatsRows == 64 })
	// A snapshot older than the churn (another test's transaction in the
	// same database) keeps its dead rows until it ends: vacuum again until
	// they are gone.
	require.Eventually(t, func() bool {
		_, err := st.Vacuum(context.Background(), store.HotTables)
		require.NoError(t, err)
		stats, err := st.ReadTableStats(context.Background())
		require.NoError(t, err)
		for _, s := range stats {
			if s.DeadRows > 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond)
}

func TestVacuumQuotesNames(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	_, err := st.Vacuum(context.Background(), []string{`locks"; DROP TABLE locks; --`})
	require.Error(t, err, "a name is one quoted identifier, never SQL")
	stats, err := st.ReadTableStats(context.Background())
	require.NoError(t, err)
	require.Len(t, stats, len(store.HotTables), "locks is still there")
}

// TestVacuumOneReplicaAtATime holds the vacuum lock as another replica's
// Vacuum does while it runs: Vacuum on the same schema skips and says so,
// and vacuums once the lock is free. A Vacuum on another schema is not held
// up.
func TestVacuumOneReplicaAtATime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, other := testdb.New(t), testdb.New(t)
	// The other replica: a session of the same schema holding the lock.
	replica, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer replica.Release()
	_, err = replica.Exec(ctx, `SELECT pg_advisory_lock($1, hashtext(current_schema()))`, store.VacuumLockClass)
	require.NoError(t, err)

	ran, err := st.Vacuum(ctx, store.HotTables)
	require.NoError(t, err)
	require.False(t, ran, "another replica is vacuuming this schema")
	var vacuumed bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT bool_or(vacuum_count > 0) FROM pg_stat_user_tables WHERE schemaname = current_schema()`).Scan(&vacuumed))
	require.False(t, vacuumed, "nothing was vacuumed")

	ran, err = other.Vacuum(ctx, store.HotTables)
	require.NoError(t, err)
	require.True(t, ran, "the lock is per schema")

	_, err = replica.Exec(ctx, `SELECT pg_advisory_unlock($1, hashtext(current_schema()))`, store.VacuumLockClass)
	require.NoError(t, err)
	ran, err = st.Vacuum(ctx, store.HotTables)
	require.NoError(t, err)
	require.True(t, ran)
	// Vacuum gave the lock back: the other session can take it.
	var got bool
	require.NoError(t, replica.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, hashtext(current_schema()))`, store.VacuumLockClass).Scan(&got))
	require.True(t, got)
	_, err = replica.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
	require.NoError(t, err)
}

// TestHotTablesAutovacuumSettings: migration 007 gives every hot table its
// own autovacuum threshold.
func TestHotTablesAutovacuumSettings(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	rows, err := st.Pool.Query(context.Background(), `
		SELECT c.relname::text FROM pg_class c
		WHERE c.relnamespace = current_schema()::regnamespace
		  AND EXISTS (SELECT FROM unnest(c.reloptions) o WHERE o LIKE 'autovacuum_vacuum_threshold=%')
		ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.ElementsMatch(t, store.HotTables, tables)
}
