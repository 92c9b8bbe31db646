package outbox_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
)

// reads counts the relay's reads of the table (the SELECT of rows in its
// batches) through a pool's tracer.
type reads struct {
	mu sync.Mutex
	n  int
}

func (r *reads) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (r *reads) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}
func (r *reads) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}
func (r *reads) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (r *reads) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if !strings.Contains(d.SQL, "SELECT id, topic, key, value, headers, created_at FROM outbox") { // the read's SELECT
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
}

func (r *reads) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// tracedPool is a pool on st's schema whose relay reads r counts.
func tracedPool(t *testing.T, st *store.Store, r *reads) *pgxpool.Pool {
	t.Helper()
	cfg := st.Pool.Config().Copy()
	cfg.ConnConfig.Tracer = r
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return pool
}

// TestWaitingTopicKeepsTheHandOff: while a topic is parked or backs off,
// the other topics' rows handed over go from memory as always, without a
// read of the table per commit; the waiting topic's own rows, handed over
// too, stay in the table and go after its earlier rows once it may.
func TestWaitingTopicKeepsTheHandOff(t *testing.T) {
	t.Parallel()
	for _, parked := range []bool{true, false} {
		t.Run(fmt.Sprintf("parked=%v", parked), func(t *testing.T) {
			t.Parallel()
			waitingTopicKeepsTheHandOff(t, parked)
		})
	}
}

func waitingTopicKeepsTheHandOff(t *testing.T, parked bool) {
	const ok, waiting, p, commits = "locks.lock.acquired.v1", "locks.state.waiting", int32(3), 20
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, ok, waiting))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var rd reads
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.Pool = tracedPool(t, st, &rd)
		cfg.PollInterval = time.Hour
		cfg.MaxAttempts = 100
		cfg.RetryBase, cfg.RetryMax = time.Hour, time.Hour // a backoff lasts the test
		outbox.NoTakeoverReads(cfg)
	})
	insert(t, st, p, rec{waiting, "k", "w0", "ew0"}, rec{ok, "k", "o0", "eo0"})
	var fault *kfake.FaultHandle
	if parked {
		_, err := st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = now() + interval '1 hour', park_reason = 'TOPIC_AUTHORIZATION_FAILED' WHERE topic = $1`, waiting)
		require.NoError(t, err)
	} else {
		fault = c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: waiting, Err: kerr.TopicAuthorizationFailed, Count: -1})
	}
	stop := start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return len(pub.acked()) == 1 }, 10*time.Second, 5*time.Millisecond, "the first read")
	if !parked {
		require.Eventually(t, func() bool { return count(t, st, "attempts = 1") == 1 }, 10*time.Second, 5*time.Millisecond, "w0 failed")
	}
	before := rd.count()

	for i := range commits {
		s := relay.Reserve(p)
		require.NotNil(t, s)
		v := fmt.Sprint("o", i+1)
		s.Fill(write(t, st, p, rec{ok, "k", v, "e" + v}, rec{waiting, "k", fmt.Sprint("w", i+1), fmt.Sprint("ew", i+1)}))
		require.Eventually(t, func() bool { return len(pub.acked()) == i+2 }, 10*time.Second, time.Millisecond)
	}
	// A failed publish has the next pass read once, as always.
	assert.LessOrEqual(t, rd.count()-before, 1, "reads of the table for %d commits", commits)
	for _, a := range pub.acked() {
		require.True(t, strings.HasPrefix(a, ok+"/"), "nothing of the waiting topic went: %s", a)
	}
	require.Equal(t, commits+1, count(t, st, "topic = $1", waiting), "its rows wait in the table")

	// Once it may go: all of them, in order.
	if parked {
		_, err := st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = NULL, park_reason = NULL WHERE topic = $1`, waiting)
		require.NoError(t, err)
		relay.Wake(p)
	} else {
		fault.Remove()
		stop() // a new run forgets the backoff
		start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	}
	want := make([]string, commits+1)
	for i := range want {
		want[i] = fmt.Sprint("w", i)
	}
	assert.Equal(t, want, firstSeen(values(consume(t, c.ListenAddrs(), waiting, commits+1))))
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond)
}
