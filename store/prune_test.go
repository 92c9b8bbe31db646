package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// The history's prune walks lock_events_occurred from where its last
// delete ended, not from the index's first entry: the entries of the rows
// it deleted stay until a VACUUM, and a walk through them on every call
// read more the more it had pruned, even when nothing was due.
func TestPruneWalksHistoryFromItsFloor(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	const rows, limit = 20000, 1000
	_, err := st.Pool.Exec(ctx, `INSERT INTO lock_events (event_id, namespace, lock_name, type, owner_id, fencing_token, occurred_at)
		SELECT gen_random_uuid(), '', 'a', 'lock.acquired', 'o', i, now() - interval '8 days' + i * interval '1 s'
		FROM generate_series(1, $1) i`, rows)
	require.NoError(t, err)
	var newest time.Time
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT max(occurred_at) FROM lock_events`).Scan(&newest))

	var pruned int64
	for {
		n, err := st.Prune(ctx, 24*time.Hour, 7*24*time.Hour, limit)
		require.NoError(t, err)
		pruned += n
		if n < limit {
			break
		}
	}
	require.Equal(t, int64(rows), pruned)
	floor := st.EventsFloor()
	require.True(t, floor.Before(newest) && floor.After(newest.Add(-2*time.Minute)),
		"the floor trails the newest row deleted by its slack: %v against %v", floor, newest)

	// Nothing is due: from the floor, the walk reads a few pages; from
	// the first entry it read every one of the rows deleted.
	pages := func(from time.Time) int {
		tx, err := st.Pool.Begin(ctx)
		require.NoError(t, err)
		defer func() { _ = tx.Rollback(ctx) }()
		var out []byte
		require.NoError(t, tx.QueryRow(ctx, `EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+store.PruneEventsSQL,
			(7*24*time.Hour).Seconds(), limit, from).Scan(&out))
		var plan []struct {
			Plan struct {
				Hit  int `json:"Shared Hit Blocks"`
				Read int `json:"Shared Read Blocks"`
			}
		}
		require.NoError(t, json.Unmarshal(out, &plan))
		return plan[0].Plan.Hit + plan[0].Plan.Read
	}
	fromFloor, fromFirst := pages(floor), pages(time.Time{})
	require.Less(t, fromFloor, 20, "pages read from the floor (%d from the first entry)", fromFirst)
	require.Greater(t, fromFirst, 3*fromFloor, "the rows deleted are still in the index, for this test's meaning")

	// A row that commits late, older than the newest deleted but within
	// the slack, is still pruned.
	_, err = st.Pool.Exec(ctx, `INSERT INTO lock_events (event_id, namespace, lock_name, type, owner_id, fencing_token, occurred_at)
		VALUES (gen_random_uuid(), '', 'a', 'lock.released', 'o', 1, $1)`, newest.Add(-10*time.Second))
	require.NoError(t, err)
	n, err := st.Prune(ctx, 24*time.Hour, 7*24*time.Hour, limit)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}
