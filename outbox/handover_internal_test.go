package outbox

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// TestHandOverLetsGoOfTheCallsStillRunning: the publishes still unanswered
// when Run returns, after HandOverWait or at once when it is negative
// (each publish then leaves its call as Run returns), keep none of their
// rows in memory. Only the partition's next Run here would drop them, and
// a partition moved for good to another replica has none; their rows are
// published again by its next owner anyway.
func TestHandOverLetsGoOfTheCallsStillRunning(t *testing.T) {
	t.Parallel()
	for _, wait := range []time.Duration{100 * time.Millisecond, -1} {
		t.Run(fmt.Sprintf("HandOverWait=%v", wait), func(t *testing.T) {
			t.Parallel()
			st := testdb.New(t)
			started, release := make(chan struct{}, 1), make(chan struct{})
			defer close(release)
			pub := publishFunc(func(string, ...*message.Message) error {
				started <- struct{}{}
				<-release
				return nil
			})
			r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, HandOverWait: wait, Logger: zerolog.Nop()})
			require.NoError(t, err)
			_, err = st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', 'v')`)
			require.NoError(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx, 0) }()
			<-started
			cancel()
			require.NoError(t, <-done)
			p := r.part(0)
			p.left.mu.Lock()
			defer p.left.mu.Unlock()
			require.Empty(t, p.left.late, "calls left behind, and their rows, held after Run returned")
		})
	}
}
