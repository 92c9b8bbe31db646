package outbox_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
)

// TestBacklogAgeLeavesParkedRowsOut: a row parked for good a day ago, and
// one parked for a while, count as parked but not in the oldest age, which
// would otherwise stay a day and more (the age alert firing forever); a
// row whose park ended counts again.
func TestBacklogAgeLeavesParkedRowsOut(t *testing.T) {
	st := testdb.New(t)
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value, created_at, parked_until) VALUES
			(0, 't', 'forever', now() - interval '1 day', 'infinity'),
			(0, 'u', 'a while', now() - interval '1 hour', now() + interval '10 minutes');
		INSERT INTO outbox (source_partition, topic, value, created_at) VALUES (0, 'v', 'waits', now() - interval '10 seconds');`)
	require.NoError(t, err)
	rows, parked, oldest, err := outbox.Backlog(ctx, st.Pool)
	require.NoError(t, err)
	require.EqualValues(t, 3, rows)
	require.EqualValues(t, 2, parked)
	require.InDelta(t, 10, oldest.Seconds(), 5)

	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = now() - interval '1 second' WHERE value = 'a while'`)
	require.NoError(t, err)
	_, parked, oldest, err = outbox.Backlog(ctx, st.Pool)
	require.NoError(t, err)
	require.EqualValues(t, 1, parked)
	require.InDelta(t, 3600, oldest.Seconds(), 5)
}
