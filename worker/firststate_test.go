package worker_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/topics"
)

// The first start after an upgrade from before revisions gives the locks
// their first revision and state a page after another, each page after the
// last one's key: all of more than two pages, the last lock's state on the
// lock state topic; a start after finds none.
func TestPublishFirstStatesEveryPage(t *testing.T) {
	e := e2e.New(t)
	ctx := context.Background()
	const n = 2500 // pages of 1000
	_, err := e.Store.Pool.Exec(ctx, `INSERT INTO locks (namespace, lock_name, status, source_partition, revision)
		SELECT CASE WHEN i % 3 = 0 THEN 'tenant' ELSE '' END, format('old-%s', i), 'released', i % 16, 0 FROM generate_series(1, $1) i`, n)
	require.NoError(t, err)
	w := e.StartWorker(e2e.WorkerOpts{Name: "upgraded"})
	got, err := w.W.PublishFirstStates(ctx)
	require.NoError(t, err)
	require.Equal(t, n, got)
	var left int
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT count(*) FROM locks WHERE revision = 0`).Scan(&left))
	require.Zero(t, left)
	got, err = w.W.PublishFirstStates(ctx)
	require.NoError(t, err)
	require.Zero(t, got, "a start after finds none")

	var lastNS, lastName string
	require.NoError(t, e.Store.Pool.QueryRow(ctx, `SELECT namespace, lock_name FROM locks ORDER BY namespace DESC, lock_name DESC LIMIT 1`).
		Scan(&lastNS, &lastName))
	details, err := kadm.NewClient(e.Producer()).ListTopics(ctx, e.Names.State)
	require.NoError(t, err)
	key := topics.LockKey(lastNS, lastName)
	st := stateIn(t, e, key, kafkatest.KeyPartition(key, len(details[e.Names.State].Partitions)))
	require.NotNil(t, st, "the state of %s, the last page's last lock", key)
	require.Equal(t, int64(1), st.Revision)
	require.Equal(t, handlers.OpFirstState, st.Operation)
}
