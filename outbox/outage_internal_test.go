package outbox

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestDatabaseOutageBacksOff: while the database fails, Run retries after
// RetryBase doubling up to RetryMax (5 s), not every PollInterval (1 s),
// and logs the outage once, not once per pass. The waits are Run's own
// choice (its sleep records them and returns at once), so nothing here
// depends on timing.
func TestDatabaseOutageBacksOff(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs syncBuffer
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waits []time.Duration
	r.sleep = func(_ context.Context, _ *partition, wait time.Duration, wake <-chan struct{}) {
		require.Nil(t, wake, "a wake-up must not cut the backoff short")
		if waits = append(waits, wait); len(waits) == 20 {
			cancel()
		}
	}
	require.NoError(t, r.Run(ctx, 0))

	require.Len(t, waits, 20)
	for i, w := range waits {
		// store.Backoff: 100 ms doubling, at most 5 s, up to 20% less.
		want := min(100*time.Millisecond<<i, 5*time.Second)
		require.LessOrEqual(t, w, want, "retry %d", i+1)
		require.GreaterOrEqual(t, w, want*4/5, "retry %d", i+1)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "outbox: database error"), logs.String())
	require.Contains(t, logs.String(), `"failures":1,`)
}
