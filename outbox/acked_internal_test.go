package outbox

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// payloads records the payloads of what it is asked to publish.
type payloads struct {
	mu   sync.Mutex
	sent []string
}

func (c *payloads) Publish(_ string, msgs ...*message.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, m := range msgs {
		c.sent = append(c.sent, string(m.Payload))
	}
	return nil
}

func (c *payloads) Close() error { return nil }

func (c *payloads) got() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent)
}

// TestRunDeletesAnEarlierRunsAckedRows: the rows an earlier Run got
// acknowledged but could not delete (the primary gone) are deleted by the
// next Run's first read, not published again; but one that a failover
// lost, and whose id (the sequence's advance lost too) went to a new row,
// takes nothing: the new row is published.
func TestRunDeletesAnEarlierRunsAckedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &payloads{}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, noTakeoverReads: true})
	require.NoError(t, err)
	var kept, lost rowRef
	insert := `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', $1) RETURNING id, created_at`
	require.NoError(t, st.Pool.QueryRow(ctx, insert, "kept").Scan(&kept.id, &kept.created))
	require.NoError(t, st.Pool.QueryRow(ctx, insert, "lost").Scan(&lost.id, &lost.created))
	// The earlier Run: both were acknowledged, their delete failed.
	r.part(0).acked = []rowRef{kept, lost}
	// The failover lost one, and a new row took its id.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, lost.id)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (id, source_partition, topic, value) VALUES ($1, 0, 't', 'new')`, lost.id)
	require.NoError(t, err)

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx, 0) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, func() bool { return len(pub.got()) > 0 }, 10*time.Second, 5*time.Millisecond, "nothing published")
	require.Equal(t, []string{"new"}, pub.got(), "the new row with a reused id is published, the acknowledged row is not")
	require.Eventually(t, func() bool {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&n))
		return n == 0
	}, 10*time.Second, 5*time.Millisecond, "published rows are deleted")
}
