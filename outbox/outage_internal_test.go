package outbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
)

type nopPublisher struct{}

func (nopPublisher) Publish(string, ...*message.Message) error { return nil }
func (nopPublisher) Close() error                              { return nil }

// TestDatabaseOutageBacksOff: while the database fails, Run retries after
// RetryBase doubling up to RetryMax (5 s), not every PollInterval (1 s),
// and logs the outage once, not once per pass. The waits are Run's own
// choice (its sleep records them and returns at once), so nothing here
// depends on timing. During the backoff a writer's commit, which shows the
// database answers, ends the wait at once; an abandoned slot (a COMMIT
// failing, as in an outage) does not. A pass that queries nothing (a Kafka
// pause) neither ends the streak nor its backoff.
func TestDatabaseOutageBacksOff(t *testing.T) {
	st := testdb.New(t)
	st.Pool.Close() // every query fails
	var logs testlog.Buffer
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, Logger: zerolog.New(&logs)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const paused = 4 // the wait after a pass the Kafka pause ends early
	var waits []time.Duration
	r.sleep = func(ctx context.Context, p *partition, wait time.Duration, wake <-chan struct{}) bool {
		i := len(waits)
		waits = append(waits, wait)
		switch {
		case i == paused:
			require.Equal(t, (<-chan struct{})(p.wake), wake, "no backoff after a pass with no query")
			p.pauseUntil = time.Time{}
		case i > 2:
			// The pass the commit at i == 2 brought failed too: the
			// failure is the relay's own, a commit no longer ends its
			// backoff.
			require.Nil(t, wake, "a commit ends the backoff once per streak")
		default:
			require.Equal(t, (<-chan struct{})(p.works), wake, "a commit ends the backoff")
		}
		switch i {
		case 2:
			// Run's own rest: an abandoned slot leaves the backoff
			// running, a filled one ends it, with no timer involved.
			r.Reserve(p.id).Abandon()
			require.Len(t, wake, 0, "an abandoned slot must not cut the backoff short")
			r.Reserve(p.id).Fill(nil)
			done := make(chan struct{})
			go func() {
				defer close(done)
				r.rest(ctx, p, time.Hour, wake)
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a commit did not end the backoff")
			}
		case paused - 1:
			// Kafka pauses the partition: the next pass returns
			// without a query.
			p.pauseUntil = time.Now().Add(time.Hour)
		}
		if len(waits) == 20 {
			cancel()
		}
		return i == 2
	}
	require.NoError(t, r.Run(ctx, 0))

	require.Len(t, waits, 20)
	for i, w := range waits {
		if i == paused {
			require.Equal(t, r.cfg.PollInterval, w)
			continue
		}
		n := i + 1 // the failures so far
		if i > paused {
			n--
		}
		// store.Backoff: 100 ms doubling, at most 5 s, up to 20% less.
		want := min(100*time.Millisecond<<(n-1), 5*time.Second)
		require.LessOrEqual(t, w, want, "retry %d", n)
		require.GreaterOrEqual(t, w, want*4/5, "retry %d", n)
	}
	require.Equal(t, 1, strings.Count(logs.String(), "outbox: database error"), logs.String())
	require.NotContains(t, logs.String(), "works again", "a pass with no query is no recovery")
	require.Contains(t, logs.String(), `"failures":1,`)
}

// publishFunc is a publisher that calls itself.
type publishFunc func(topic string, msgs ...*message.Message) error

func (f publishFunc) Publish(topic string, msgs ...*message.Message) error { return f(topic, msgs...) }
func (publishFunc) Close() error                                           { return nil }

// TestOutageLogsFailedDeletesInItsStreak: rows Kafka acknowledged just
// before PostgreSQL went away are deleted by no pass during the outage;
// each rest tries (DeleteDelay) and fails. Those failures are the outage's
// streak too: one line for it, not one per rest (a fault run logged 35 to
// 52 in 15 s per replica).
func TestOutageLogsFailedDeletesInItsStreak(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	schema := testdb.NewSchema(t)
	url, proxy := testdb.Proxied(t, schema.URL)
	st := testdb.Schema{Name: schema.Name, URL: url}.Open(t, store.Config{})
	require.NoError(t, st.Migrate(ctx))
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', 'v')`)
	require.NoError(t, err)
	var logs testlog.Buffer
	acked := func(string, ...*message.Message) error {
		proxy.Cut() // PostgreSQL goes away as Kafka acknowledges the row
		return nil
	}
	r, err := New(Config{Publisher: publishFunc(acked), Pool: st.Pool, Logger: zerolog.New(&logs),
		PollInterval: 50 * time.Millisecond, DeleteDelay: time.Millisecond, RetryBase: 50 * time.Millisecond, RetryMax: 100 * time.Millisecond})
	require.NoError(t, err)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deletes := 0 // rests that try the delete, once their DeleteDelay has passed
	r.sleep = func(ctx context.Context, p *partition, wait time.Duration, wake <-chan struct{}) bool {
		if len(p.acked) > 0 && wait > r.cfg.DeleteDelay {
			if deletes++; deletes == 5 {
				cancel() // this rest's delete, and no pass after it
			}
		}
		return r.rest(ctx, p, wait, wake)
	}
	require.NoError(t, r.Run(rctx, 0))

	const deleteFailed, dbError = "outbox: deleting published rows failed", "outbox: database error"
	require.Equal(t, 1, strings.Count(logs.String(), deleteFailed)+strings.Count(logs.String(), dbError),
		"one line for the outage, its first failure:\n%s", logs.String())
	require.Contains(t, logs.String(), `"failures":1,`)
}
