package outbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
)

// Parked, which every /health probe runs within its 2 s check, reads a
// bounded number of pages whatever the backlog: a topic that cannot be
// written parks every row it has (200,000 here), and rows whose park ended
// wait in the index too. A count of them all reads every entry, more pages
// with every row. auto_explain hands the plan to the test as a notice,
// with the buffers it read, under the generic plan the pool's sessions
// use.
func TestParkedReadIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 250,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
			SELECT 0, 'lock.acquired', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED' FROM generate_series(1, 200000);
		INSERT INTO outbox (source_partition, topic, value, parked_until)
			SELECT 1, 'locks.replies.gone', '\x00', now() - interval '1 minute' FROM generate_series(1, 50000);
		INSERT INTO outbox (source_partition, topic, value, parked_until) VALUES
			(2, 'locks.commands.dlq', '\x00', 'infinity'), (3, 'locks.replies.x', '\x00', NULL);
		ANALYZE outbox`)
	require.NoError(t, err)

	ex := testdb.NewExplained(t, st.Pool)
	n, err := outbox.Parked(ctx, ex.Pool)
	require.NoError(t, err)
	pages, plan := ex.Pages(t, "FROM outbox")
	require.Less(t, pages, 100, "Parked reads %d pages:\n%s", pages, plan)
	t.Logf("Parked read %d pages of 250,000 rows in the parked index:\n%s", pages, plan)
	require.EqualValues(t, outbox.ParkedCap, n, "counted up to the cap")

	// Below the cap it counts exactly: the row parked for good, none whose
	// park ended or that was never parked.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE source_partition = 0 AND id % 1000 <> 0`)
	require.NoError(t, err)
	n, err = outbox.Parked(ctx, st.Pool)
	require.NoError(t, err)
	require.EqualValues(t, 201, n)
}
