package worker

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// probing is a Worker with only what watchPostgres uses: st, whose
// UnreachableTimeout is timeout; not halted yet.
func probing(st *store.Store, timeout time.Duration) *Worker {
	w := &Worker{cfg: Config{Store: st, UnreachableTimeout: timeout}, log: zerolog.Nop(), withdrawnMetric: func(bool) {}}
	w.hard, w.killHard = context.WithCancel(context.Background())
	w.halted, w.halt = context.WithCancel(w.hard)
	w.serveAgain()
	return w
}

// watching runs w.watchPostgres until the test ends and returns a channel
// closed when it has returned.
func watching(t *testing.T, w *Worker) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.watchPostgres(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// TestWatchPostgresEndsWhenHalted: once the partitions are stopped for good
// (Kill, a drain past its bound), a withdrawal has nothing to give up and a
// rejoin nothing to take: the probe loop returns, whatever its context,
// where with PostgreSQL failing fast it dialled it in a tight loop (the
// withdrawal it could not make left its next probe due at once) until Run
// ended.
func TestWatchPostgresEndsWhenHalted(t *testing.T) {
	t.Run("probes failing", func(t *testing.T) {
		st := testdb.New(t)
		st.Close() // every probe fails at once
		w := probing(st, 10*time.Millisecond)
		w.killHard() // Kill
		select {
		case <-watching(t, w):
		case <-time.After(10 * time.Second):
			t.Fatal("the probe loop goes on after the partitions stopped for good")
		}
		require.False(t, w.Withdrawn())
	})
	t.Run("halted while probing", func(t *testing.T) {
		w := probing(testdb.New(t), time.Minute)
		done := watching(t, w)
		w.halt() // stopAll
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the probe loop goes on after the partitions stopped for good")
		}
	})
}
