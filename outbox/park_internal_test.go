package outbox

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
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
		r.settle(context.Background(), p, unit{topic: topic, rows: []row{{rowRef: rowRef{id: 1}, topic: topic}}}, err, &passState{failed: map[string]bool{}}, false)
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

// A reply topic's creation refused for its replicas, between two topics
// failing for Kafka being away, neither pauses nor ends their row: with
// most brokers down, new reply topics are refused so while the existing
// topics fail for Kafka away, and the partition must still pause rather
// than wait out every existing topic's timeout.
func TestReplicasRefusalBetweenAwayFailuresPauses(t *testing.T) {
	r := &Relay{cfg: Config{RetryBase: time.Second, RetryMax: time.Minute, ParkFor: time.Hour}, log: zerolog.Nop()}
	p := &partition{blocked: map[string]block{}, parked: map[string]bool{}}
	away := fmt.Errorf("produce: %w", kerr.NotEnoughReplicas)
	replicas := fmt.Errorf("kafkapubsub: create topic: %w", kerr.InvalidReplicationFactor)
	settle := func(topic string, err error) bool {
		return r.settle(context.Background(), p, unit{topic: topic, rows: []row{{rowRef: rowRef{id: 1}, topic: topic}}}, err, &passState{failed: map[string]bool{}}, false)
	}
	require.True(t, settle("existing0", away))
	require.True(t, settle("locks.replies.new0", replicas))
	require.True(t, settle("locks.replies.new1", replicas))
	require.True(t, p.pauseUntil.IsZero(), "one topic away, the others refused for their replicas")
	require.False(t, settle("existing1", away), "the pass stops")
	require.True(t, p.pauseUntil.After(time.Now()), "two topics away with no success between")
	require.Equal(t, 1, p.kafkaFailures)
}

// Topics failing for Kafka being away beside a topic acknowledged in the
// same call pause nothing: Kafka is there, and the failures are theirs.
func TestKafkaAwayBesideAnAcknowledgementPausesNothing(t *testing.T) {
	r := &Relay{cfg: Config{RetryBase: time.Second, RetryMax: time.Minute}, log: zerolog.Nop()}
	p := &partition{blocked: map[string]block{}}
	away := errors.New("dial tcp: connection refused")
	call := func(acked bool, topics ...string) { // one call's failures
		for _, topic := range topics {
			r.settle(context.Background(), p, unit{topic: topic, rows: []row{{rowRef: rowRef{id: 1}, topic: topic}}}, away, &passState{failed: map[string]bool{}}, acked)
		}
	}
	call(true, "a1", "a2")
	require.True(t, p.pauseUntil.IsZero(), "another topic of the call was acknowledged")
	call(false, "a1", "a2")
	require.True(t, p.pauseUntil.After(time.Now()), "nothing acknowledged: two topics in a row")
}

// A topic whose creation Kafka refuses for its replicas is parked only
// once refused so on end for ParkFor: another failure between (Kafka away,
// as a broker restarting may show too) starts the count again.
func TestReplicasRefusalParksOnlyOnEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r := &Relay{cfg: Config{Pool: st.Pool, ParkFor: time.Minute, RetryBase: time.Second, RetryMax: time.Minute}, log: zerolog.Nop(),
		parts: map[int32]*partition{}}
	p := r.part(0)
	var id int64
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', '\x00') RETURNING id`).Scan(&id))
	parked := func() int {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE parked_until > now() AND park_reason = 'INVALID_REPLICATION_FACTOR'`).Scan(&n))
		return n
	}
	settle := func(err error) {
		require.True(t, r.settle(ctx, p, unit{topic: "t", rows: []row{{rowRef: rowRef{id: id}, topic: "t"}}}, err, &passState{failed: map[string]bool{}}, false))
	}
	refusedLong := func() { // refused so for a while already
		b := p.blocked["t"]
		b.replicasSince = time.Now().Add(-time.Hour)
		p.blocked["t"] = b
	}
	replicas := fmt.Errorf("kafkapubsub: create topic: %w", kerr.InvalidReplicationFactor)

	refusedLong()
	settle(errors.New("dial tcp: connection refused"))
	require.Zero(t, parked(), "away")
	settle(replicas)
	require.Zero(t, parked(), "refused so again since the other failure only")
	refusedLong()
	settle(replicas)
	require.Equal(t, 1, parked())
	require.True(t, p.parked["t"])
	require.NotContains(t, p.blocked, "t", "the reads leave it out as parked")
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
	rows, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, map[string]block{"there": over, "running": running}, p.blocked, "only the topic without rows")

	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) SELECT 0, 'other', '\x00' FROM generate_series(1, 3)`)
	require.NoError(t, err)
	p.blocked["gone"] = over
	rows, _, err = r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Len(t, rows, 3)
	require.Contains(t, p.blocked, "gone", "a full read")

	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE topic <> 'running'`)
	require.NoError(t, err)
	p.lastRead = time.Now()
	_, _, err = r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Equal(t, map[string]block{"running": running}, p.blocked)
	require.False(t, r.mustRead(p), "no read per pass")
}

// lockRow holds a row lock on the outbox row id until the test ends or
// the returned function is called: a statement of the relay's that writes
// the row waits for it, and fails after the store's LockTimeout.
func lockRow(t *testing.T, st *store.Store, id int64) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE`, id)
	require.NoError(t, err)
	release = func() { _ = tx.Rollback(ctx) }
	t.Cleanup(release)
	return release
}

// When the database fails to account a failed publish (its attempts, its
// park), the topic backs off all the same: the next read leaves its rows
// out rather than select them again, ahead of the other topics' rows.
func TestFailedAccountingBacksTheTopicOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewWith(t, store.Config{LockTimeout: 100 * time.Millisecond})
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	p := r.part(0)
	var bad rowRef
	var good int64
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 'bad', '\x00') RETURNING id, created_at`).Scan(&bad.id, &bad.created))
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 'good', '\x00') RETURNING id`).Scan(&good))

	release := lockRow(t, st, bad.id)
	err = r.failed(ctx, p, "bad", []row{{rowRef: bad, topic: "bad"}}, errors.New("TOPIC_AUTHORIZATION_FAILED"), "TOPIC_AUTHORIZATION_FAILED")
	require.Error(t, err, "the attempts' update waits for the lock")
	require.Contains(t, p.blocked, "bad")
	require.True(t, p.blocked["bad"].until.After(time.Now()), "the topic backs off")
	release()

	rows, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.Len(t, rows, 1)
	require.Equal(t, good, rows[0].id, "the next read leaves the topic out")
}

// A failed publish counts its attempt by the rows' id and created_at, as
// deletes and parks go: a failover that lost the row tried gave its id to
// a new row, which must not inherit the attempt (and be parked one failure
// early).
func TestFailedCountsAttemptsByRowRef(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	p := r.part(0)
	var lost rowRef
	require.NoError(t, st.Pool.QueryRow(ctx, `INSERT INTO outbox (source_partition, topic, value) VALUES (0, 't', '\x00') RETURNING id, created_at`).
		Scan(&lost.id, &lost.created))
	// The failover lost the row, and a new row took its id.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE id = $1`, lost.id)
	require.NoError(t, err)
	fresh := rowRef{lost.id, lost.created.Add(time.Second)}
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (id, source_partition, topic, value, created_at) VALUES ($1, 0, 't', '\x00', $2)`,
		fresh.id, fresh.created)
	require.NoError(t, err)
	attempts := func() int {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT attempts FROM outbox WHERE id = $1`, lost.id).Scan(&n))
		return n
	}

	refused := errors.New("TOPIC_AUTHORIZATION_FAILED")
	require.NoError(t, r.failed(ctx, p, "t", []row{{rowRef: lost, topic: "t"}}, refused, "TOPIC_AUTHORIZATION_FAILED"))
	require.Zero(t, attempts(), "the new row got the lost row's attempt")
	require.NoError(t, r.failed(ctx, p, "t", []row{{rowRef: fresh, topic: "t"}}, refused, "TOPIC_AUTHORIZATION_FAILED"))
	require.Equal(t, 1, attempts(), "its own attempt counts")
}

// A park goes a bounded number of rows at a time, in id order, all until
// the same time. One that fails part way has parked the topic's oldest
// rows, which hold back the rest (a read leaves the topic out): the topic
// counts as parked.
func TestParkGoesInChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewWith(t, store.Config{LockTimeout: 100 * time.Millisecond})
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, MaxAttempts: 1, Logger: zerolog.Nop(), parkChunk: 3})
	require.NoError(t, err)
	p := r.part(0)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, CASE WHEN i IN (2, 6) THEN 'good' ELSE 'bad' END, '\x00' FROM generate_series(1, 9) i`)
	require.NoError(t, err)
	var ids []int64
	var first time.Time
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id), min(created_at) FROM outbox WHERE topic = 'bad'`).Scan(&ids, &first))
	require.Len(t, ids, 7)
	fail := func() error {
		return r.failed(ctx, p, "bad", []row{{rowRef: rowRef{ids[0], first}, topic: "bad"}}, errors.New("TOPIC_AUTHORIZATION_FAILED"), "TOPIC_AUTHORIZATION_FAILED")
	}
	var parked []int64
	parkedIDs := func() []int64 {
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM outbox WHERE parked_until > now()`).Scan(&parked))
		return parked
	}

	release := lockRow(t, st, ids[4]) // in the second chunk
	require.NoError(t, fail())
	require.Equal(t, ids[:3], parkedIDs(), "the first chunk")
	require.True(t, p.parked["bad"])
	require.NotContains(t, p.blocked, "bad")
	release()
	rows, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	for _, x := range rows {
		require.Equal(t, "good", x.topic, "the rows not parked wait behind the parked ones")
	}
	require.Len(t, rows, 2)

	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = NULL`)
	require.NoError(t, err)
	require.NoError(t, fail())
	require.Equal(t, ids, parkedIDs(), "every chunk")
	var untils int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(DISTINCT parked_until) FROM outbox WHERE topic = 'bad'`).Scan(&untils))
	require.Equal(t, 1, untils, "one park")
}
