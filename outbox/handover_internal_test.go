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

// TestHandOverLeavesNoCallToTheNextRun: a Run that returned without
// waiting (HandOverWait < 0) leaves none of its publishing calls in the
// next Run's: neither those its publishes left as its context ended nor
// those startAll would start after it (units past maxConcurrentTopics),
// whose rows the next Run would otherwise keep, and acknowledge. Under
// -race, the next Run's hold is set apart from the old calls' reads.
func TestHandOverLeavesNoCallToTheNextRun(t *testing.T) {
	st := testdb.New(t)
	stop := make(chan struct{})
	defer close(stop)
	started := make(chan struct{}, 1000)
	pub := publishFunc(func(string, ...*message.Message) error { started <- struct{}{}; <-stop; return nil })
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, HandOverWait: -1, Logger: zerolog.Nop()})
	require.NoError(t, err)
	for i := range 40 {
		_, err = st.Pool.Exec(context.Background(), `INSERT INTO outbox (source_partition, topic, value) VALUES (0, $1, 'v')`, fmt.Sprintf("t%d", i))
		require.NoError(t, err)
	}
	leaked := 0
	for iter := range 30 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx, 0) }()
		<-started
		cancel()
		require.NoError(t, <-done)
		ctx2, cancel2 := context.WithCancel(context.Background())
		go func() { done <- r.Run(ctx2, 0) }()
		// An absence: give the first Run's stray calls (started as its
		// publishes returned on its end) time to be left.
		time.Sleep(20 * time.Millisecond)
		p := r.part(0)
		p.left.mu.Lock()
		n := len(p.left.late)
		p.left.mu.Unlock()
		if n > 0 {
			leaked++
			t.Logf("iter %d: %d calls of the Run before in the new Run's list", iter, n)
		}
		cancel2()
		<-done
	}
	require.Zero(t, leaked, "calls of a Run that returned held in the next Run's")
}
