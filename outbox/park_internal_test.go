package outbox

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// A parked or backing-off topic does not make every pass read the table:
// passes publish the other topics' rows handed over, leaving its own in
// the table. The end of a backoff does: the topic is retried from there.
func TestWaitingTopicReadsTheTableOnlyToRetry(t *testing.T) {
	r := &Relay{cfg: Config{PollInterval: time.Hour}}
	now := time.Now()
	p := &partition{parked: map[string]bool{"p": true}, blocked: map[string]block{"b": {at: now, until: now.Add(time.Minute)}}, lastRead: now}
	require.False(t, r.mustRead(p), "parked, backing off")
	require.True(t, p.waits(row{topic: "p"}))
	require.True(t, p.waits(row{topic: "b"}))
	require.False(t, p.waits(row{topic: "other"}))
	p.blocked["b"] = block{at: now.Add(-time.Minute), until: now}
	require.True(t, r.mustRead(p), "backoff over")
	require.True(t, p.waits(row{topic: "b"}), "until the read retried it")
}

// Two topics failing one after the other for Kafka being away, with no
// success between, pause the partition, also when each failed in a pass
// of its own (as passes publishing one commit's rows handed over do). One
// topic failing again does not: it backs off alone. A success between
// forgets the failure.
func TestKafkaAwayPausesAcrossPasses(t *testing.T) {
	r := &Relay{cfg: Config{RetryBase: time.Second, RetryMax: time.Minute}, log: zerolog.Nop()}
	p := &partition{blocked: map[string]block{}}
	away := errors.New("dial tcp: connection refused")
	pass := func(topic string, err error) { // a pass of its own
		r.settle(context.Background(), p, unit{topic: topic, rows: []row{{id: 1, topic: topic}}}, err, &passState{failed: map[string]bool{}})
	}
	pass("x", away)
	pass("x", away)
	require.True(t, p.pauseUntil.IsZero(), "one topic")
	pass("y", nil)
	pass("z", away)
	require.True(t, p.pauseUntil.IsZero(), "a success between")
	pass("x", away)
	require.True(t, p.pauseUntil.After(time.Now()), "two topics in a row")
	require.Equal(t, 1, p.kafkaFailures)
}

// A topic whose backoff has ended and which has no row left to retry (an
// operator deleted them, a stale replica published them) loses its
// backoff at the read that finds none, or it would have every pass read
// the table. A read that leaves the topic out (its backoff runs) or that
// was full (its rows may come later) says nothing of it.
func TestBackoffWithoutRowsEndsAtTheRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r := &Relay{cfg: Config{Pool: st.Pool, BatchSize: 3, PollInterval: time.Hour}, parts: map[int32]*partition{}}
	r.selects = &merger[selectReq, selected]{run: r.selectRows, timeout: queryTimeout}
	p := r.part(0)
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 'there', '\x00'), (0, 'running', '\x00')`)
	require.NoError(t, err)
	now := time.Now()
	over, running := block{at: now.Add(-time.Minute), until: now}, block{at: now, until: now.Add(time.Hour)}
	p.blocked = map[string]block{"gone": over, "there": over, "running": running}
	p.lastRead = now

	require.True(t, r.mustRead(p))
	rows, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, map[string]block{"there": over, "running": running}, p.blocked, "only the topic without rows")

	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) SELECT 0, 'other', '\x00' FROM generate_series(1, 3)`)
	require.NoError(t, err)
	p.blocked["gone"] = over
	rows, err = r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Contains(t, p.blocked, "gone", "a full read")

	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE topic <> 'running'`)
	require.NoError(t, err)
	p.lastRead = time.Now()
	_, err = r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Equal(t, map[string]block{"running": running}, p.blocked)
	require.False(t, r.mustRead(p), "no read per pass")
}
