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

// TestRunForgetsAnEarlierRunsAckedIds: a row acknowledged in an earlier
// Run whose delete failed (the primary gone) is not deleted by id when the
// partition runs again: a failover that lost the row and the sequence's
// advance may have given its id to a new row, not published yet, which
// the new Run publishes.
func TestRunForgetsAnEarlierRunsAckedIds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &payloads{}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, noTakeoverReads: true})
	require.NoError(t, err)
	var id int64
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', 'old') RETURNING id`).Scan(&id))
	// The earlier Run: the row was acknowledged, its delete failed.
	r.part(0).acked = []int64{id}
	// The failover lost it, and a new row took its id.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, id)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (id, source_partition, topic, value, created_at) VALUES ($1, 0, 't', 'new', clock_timestamp() + interval '1 second')`, id)
	require.NoError(t, err)

	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx, 0) }()
	defer func() { cancel(); require.NoError(t, <-done) }()
	require.Eventually(t, func() bool { return slices.Equal(pub.got(), []string{"new"}) }, 10*time.Second, 5*time.Millisecond,
		"the new row with a reused id was not published")
}
