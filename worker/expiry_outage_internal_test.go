package worker

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestExpiryOutageLogsOnce: while the database fails, the expiry scheduler
// backs off (100 ms doubling) and logs its first failure only, not one line
// a second: over about 2 s (four or five attempts), one line, where a
// fixed 1 s retry logged each attempt. Any window under 30 s gives one.
func TestExpiryOutageLogsOnce(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs lockedBuffer
	w := &Worker{cfg: Config{Store: st}, log: zerolog.New(&logs)}
	p := &partition{w: w, id: 3, wake: make(chan struct{}, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 2100*time.Millisecond)
	defer cancel()
	p.scheduleExpiry(ctx)
	require.Equal(t, 1, strings.Count(logs.String(), "expiry scheduler: reading next due time"), logs.String())
	require.Contains(t, logs.String(), `"failures":1,`)
}
