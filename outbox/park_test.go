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
// batches) through a pool's tracer, and keeps the last one's statement.
type reads struct {
	mu   sync.Mutex
	n    int
	sql  string
	args []any
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
	if !strings.Contains(d.SQL, "LATERAL") {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n++
	r.sql, r.args = d.SQL, d.Args
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

// TestReadSkipsTheWaitingBacklog: a read of a partition whose topic is
// parked reads rows of the order of a batch, however long that topic's
// backlog (its parked rows and the newer ones waiting behind them): the
// statement the relay ran, run again under EXPLAIN ANALYZE, counts the
// outbox rows it read.
func TestReadSkipsTheWaitingBacklog(t *testing.T) {
	t.Parallel()
	const ok, waiting, p, backlog = "locks.lock.acquired.v1", "locks.state.waiting", int32(4), 20_000
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, ok, waiting))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	var rd reads
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.Pool = tracedPool(t, st, &rd)
		cfg.PollInterval = time.Hour // its first read is the one
		outbox.NoTakeoverReads(cfg)
	})
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) SELECT $1, $2, '\x00' FROM generate_series(1, $3)`, p, waiting, backlog)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = now() + interval '1 hour', park_reason = 'TOPIC_AUTHORIZATION_FAILED'
		WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT 500)`)
	require.NoError(t, err)
	insert(t, st, p, rec{ok, "k", "o1", "eo1"}, rec{ok, "k", "o2", "eo2"})
	_, err = st.Pool.Exec(ctx, `ANALYZE outbox`)
	require.NoError(t, err)

	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return len(pub.acked()) == 2 }, 10*time.Second, 5*time.Millisecond, "the other topic's rows")
	require.Equal(t, 1, rd.count())
	require.Equal(t, backlog, count(t, st, "topic = $1", waiting))

	insert(t, st, p, rec{ok, "k", "o3", "eo3"}) // for the read run again to find
	rd.mu.Lock()
	sql, args := rd.sql, rd.args
	rd.mu.Unlock()
	read := outboxRowsRead(t, st, sql, args)
	assert.Less(t, read, 500, "outbox rows read for a backlog of %d", backlog)
}

// outboxRowsRead runs sql under EXPLAIN ANALYZE, with the relay's
// settings, and sums the rows its scans of outbox read: those they
// returned and those their filters dropped.
func outboxRowsRead(t *testing.T, st *store.Store, sql string, args []any) int {
	t.Helper()
	ctx := context.Background()
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	_, err = tx.Exec(ctx, `SELECT set_config('enable_seqscan', 'off', true)`)
	require.NoError(t, err)
	var plan []struct{ Plan planNode }
	require.NoError(t, tx.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, args...).Scan(&plan))
	require.Len(t, plan, 1)
	var sum func(n planNode) int
	sum = func(n planNode) int {
		read := 0
		if n.Relation == "outbox" {
			read = int((n.Rows + n.Removed + n.Rechecked) * n.Loops)
		}
		for _, c := range n.Plans {
			read += sum(c)
		}
		return read
	}
	return sum(plan[0].Plan)
}

type planNode struct {
	Relation  string     `json:"Relation Name"`
	Rows      float64    `json:"Actual Rows"`
	Loops     float64    `json:"Actual Loops"`
	Removed   float64    `json:"Rows Removed by Filter"`
	Rechecked float64    `json:"Rows Removed by Index Recheck"`
	Plans     []planNode `json:"Plans"`
}

// TestParkWritesTheRowsTried: parking a topic writes the rows its failed
// publish tried, not its whole backlog; they hold the rest back, which is
// never tried, and all go in order once the topic may.
func TestParkWritesTheRowsTried(t *testing.T) {
	t.Parallel()
	const denied, p, batch, rows = "locks.state.denied", int32(5), 10, 100
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, denied))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: denied, Err: kerr.TopicAuthorizationFailed, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.BatchSize, cfg.MaxAttempts = batch, 1 })
	rs := make([]rec, rows)
	want := make([]string, rows)
	for i := range rs {
		want[i] = fmt.Sprint("d", i)
		rs[i] = rec{denied, "k", want[i], "e" + want[i]}
	}
	insert(t, st, p, rs...)

	_, err := relay.DrainOnce(ctx, p)
	require.ErrorContains(t, err, "TOPIC_AUTHORIZATION_FAILED")
	assert.Equal(t, batch, count(t, st, "parked_until > now()"), "the rows tried")
	assert.Equal(t, batch, count(t, st, "attempts > 0"))
	parked, err := outbox.Parked(ctx, st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, batch, parked)
	n, err := relay.DrainOnce(ctx, p)
	require.NoError(t, err)
	assert.Zero(t, n, "the rest wait behind them")
	assert.Equal(t, batch, count(t, st, "attempts > 0"), "and are not tried")

	fault.Remove()
	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = NULL, park_reason = NULL, attempts = 0 WHERE topic = $1 AND parked_until < 'infinity'`, denied)
	require.NoError(t, err)
	n, err = relay.DrainOnce(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, rows, n)
	assert.Equal(t, want, firstSeen(values(consume(t, c.ListenAddrs(), denied, rows))))
}

// TestWaitingTopicKeepsOrderAcrossTopics: a partition read topic by topic,
// while one is parked, still gives the other topics' rows in id order
// across topics (OrderAcrossTopics), batch after batch.
func TestWaitingTopicKeepsOrderAcrossTopics(t *testing.T) {
	t.Parallel()
	const a, b, waiting, p = "locks.lock.acquired.v1", "locks.replies.svc", "locks.state.waiting", int32(6)
	ctx := context.Background()
	c := newCluster(t, kfake.SeedTopics(1, a, b, waiting))
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.BatchSize, cfg.OrderAcrossTopics = 3, true })
	var rs []rec
	var want []string
	for i := range 12 {
		topic := []string{a, a, b, waiting}[i%4]
		v := fmt.Sprint("v", i)
		rs = append(rs, rec{topic, "k", v, "e" + v})
		if topic != waiting {
			want = append(want, topic+"/"+v)
		}
	}
	insert(t, st, p, rs...)
	_, err := st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = now() + interval '1 hour' WHERE topic = $1 AND value = 'v3'`, waiting)
	require.NoError(t, err)
	n, err := relay.DrainOnce(ctx, p)
	require.NoError(t, err)
	assert.Equal(t, len(want), n)
	assert.Equal(t, want, pub.acked())
	assert.Equal(t, 3, count(t, st, "topic = $1", waiting))
}
