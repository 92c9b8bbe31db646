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
			runUntilPublishing(t, r, started)
			require.Zero(t, lateCalls(r), "calls left behind, and their rows, held after Run returned")
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
		runUntilPublishing(t, r, started)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- r.Run(ctx, 0) }()
		// An absence: give the first Run's stray calls (started as its
		// publishes returned on its end) time to be left.
		time.Sleep(20 * time.Millisecond)
		if n := lateCalls(r); n > 0 {
			leaked++
			t.Logf("iter %d: %d calls of the Run before in the new Run's list", iter, n)
		}
		cancel()
		<-done
	}
	require.Zero(t, leaked, "calls of a Run that returned held in the next Run's")
}

// runUntilPublishing runs r's partition 0 until a publish of it started,
// then ends the Run, and returns once it has.
func runUntilPublishing(t *testing.T, r *Relay, started <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx, 0) }()
	<-started
	cancel()
	require.NoError(t, <-done)
}

// lateCalls is how many calls left behind partition 0 holds the answers of.
func lateCalls(r *Relay) int {
	p := r.part(0)
	p.left.mu.Lock()
	defer p.left.mu.Unlock()
	return len(p.left.late)
}
