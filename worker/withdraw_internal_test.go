package worker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
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

// A replica withdrawn across a loss of PostgreSQL's transactions (an
// asynchronous standby promoted during a cut longer than
// UnreachableTimeout, its sequence gone back while token 42 is published)
// checks the fencing tokens before it takes partitions again: those it is
// then assigned resume from the promoted server's offsets, with nothing
// it committed to compare them with. Kafka refusing the check leaves it
// withdrawn under TOKEN_FLOOR_CHECK=require, until a later rejoin's check
// succeeds; under warn it takes partitions, unchecked, saying so.
func TestRejoinChecksTheFencingTokens(t *testing.T) {
	for _, check := range []string{TokenFloorRequire, TokenFloorWarn} {
		t.Run(check, func(t *testing.T) {
			ctx := context.Background()
			c, w, st, logs := publishedToken42(t)
			w.cfg.TokenFloorCheck = check
			w.withdraw(errors.New("cut off"), time.Minute)
			require.True(t, w.Withdrawn())
			_, err := st.Pool.Exec(ctx, `SELECT setval('fencing_tokens', 1, false)`) // the loss
			require.NoError(t, err)

			refused := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topics.DefaultNames().Acquired, Err: kerr.TopicAuthorizationFailed, Count: -1})
			w.rejoin(ctx)
			require.Positive(t, refused.Hits(), "the rejoin reads the lock.acquired topic")
			if check == TokenFloorWarn {
				require.False(t, w.Withdrawn())
				require.Contains(t, logs.String(), "were not checked against Kafka (TOKEN_FLOOR_CHECK=warn)")
				return
			}
			require.True(t, w.Withdrawn(), "no partition taken unchecked")
			require.Contains(t, logs.String(), "it stays withdrawn")
			var last int64
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM fencing_tokens`).Scan(&last))
			require.EqualValues(t, 1, last)

			refused.Remove()
			w.rejoin(ctx)
			require.False(t, w.Withdrawn())
			require.Contains(t, logs.String(), "PostgreSQL is behind Kafka")
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM fencing_tokens`).Scan(&last))
			require.EqualValues(t, 42+TokenFloorMargin, last)
		})
	}
}
