package worker

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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
			w.rejoin(ctx, &probeState{})
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
			w.rejoin(ctx, &probeState{})
			require.False(t, w.Withdrawn())
			require.Contains(t, logs.String(), "PostgreSQL is behind Kafka")
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM fencing_tokens`).Scan(&last))
			require.EqualValues(t, 42+TokenFloorMargin, last)
		})
	}
}

// A replica that rejoins has a whole UnreachableTimeout from then on: the
// rejoin's check (up to tokenFloorTimeout reading Kafka; here held until
// the test lets the lock.acquired offsets be listed) is not counted against
// it, or one probe failing right after the rejoin would withdraw the
// replica again at once (another rebalance, another check at the next
// rejoin).
func TestRejoinRestartsTheUnreachableTimeout(t *testing.T) {
	ctx := context.Background()
	c, w, _, _ := publishedToken42(t)
	w.cfg.UnreachableTimeout = DefaultUnreachableTimeout
	w.withdraw(errors.New("cut off"), time.Minute)
	held, release := make(chan struct{}), make(chan struct{})
	c.ControlKey(int16(kmsg.ListOffsets), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.DropControl() // the first listing only
		close(held)
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})

	s := probeState{answered: time.Now(), inARow: rejoinAfter - 1}
	done := make(chan struct{})
	go func() { defer close(done); w.probed(ctx, &s, nil) }()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the rejoin's check did not list the lock.acquired offsets")
	}
	released := time.Now()
	close(release)
	<-done
	require.False(t, w.Withdrawn())
	require.False(t, s.answered.Before(released), "the timeout runs from the rejoin, not from the probe before its check")
}

// A rejoin's check that Kafka refuses at once (no Read on lock.acquired)
// is not made again at every probe, each second, each logging an error,
// for as long as the refusal lasts: the next is made at the first probe
// answered after a delay that doubles up to rejoinCheckMaxDelay. The check
// that succeeds rejoins and forgets the failures.
func TestRejoinCheckFailedBacksOff(t *testing.T) {
	ctx := context.Background()
	c, w, _, logs := publishedToken42(t)
	w.cfg.TokenFloorCheck = TokenFloorRequire
	w.withdraw(errors.New("cut off"), time.Minute)
	refused := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Topic: topics.DefaultNames().Acquired, Err: kerr.TopicAuthorizationFailed, Count: -1})
	const failed = "the fencing tokens could not be checked: it stays withdrawn"

	s := probeState{inARow: rejoinAfter - 1}
	w.probed(ctx, &s, nil)
	hits := refused.Hits()
	require.Positive(t, hits, "the rejoin checks")
	require.Equal(t, 1, strings.Count(logs.String(), failed))
	w.probed(ctx, &s, nil) // the next probe, a second later
	require.Equal(t, hits, refused.Hits(), "no check before the delay has passed")
	require.Equal(t, 1, strings.Count(logs.String(), failed))

	for range 5 {
		s.checkAt = time.Time{} // the delay passed
		w.probed(ctx, &s, nil)
	}
	require.True(t, w.Withdrawn())
	require.Equal(t, 6, s.checksFailed)
	var delays []time.Duration
	for line := range strings.Lines(logs.String()) {
		var l struct {
			Message string  `json:"message"`
			Delay   float64 `json:"check_again_in"` // ms
		}
		require.NoError(t, json.Unmarshal([]byte(line), &l))
		if strings.Contains(l.Message, failed) {
			delays = append(delays, time.Duration(l.Delay*float64(time.Millisecond)))
		}
	}
	require.Len(t, delays, 6)
	for i := 1; i < len(delays)-1; i++ {
		require.Greater(t, delays[i], delays[i-1], "doubling: %v", delays)
	}
	require.LessOrEqual(t, delays[len(delays)-1], rejoinCheckMaxDelay, "%v", delays)

	refused.Remove()
	s.checkAt = time.Time{}
	w.probed(ctx, &s, nil)
	require.False(t, w.Withdrawn())
	require.Zero(t, s.checksFailed)
}
