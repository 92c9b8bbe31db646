package outbox

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// TestReadSetsAsideWhatItLeavesOut: a read sets aside the rows of a topic
// it leaves out (here backing off in memory) that it walked past, at most
// parkChunk of them, skipping a row another transaction holds rather than
// wait for it. They still wait (not parked, not counted as such), go in id
// order with the topic's newer rows once the backoff is over, and a park
// takes them with the rest, oldest first.
func TestReadSetsAsideWhatItLeavesOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewWith(t, store.Config{LockTimeout: 100 * time.Millisecond})
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, BatchSize: 3, PollInterval: time.Hour, Logger: zerolog.Nop(), parkChunk: 2})
	require.NoError(t, err)
	p := r.part(0)
	ids := insertValues(t, st, "b1", "o1", "b2", "o2", "b3", "b4")
	aside := func() []string {
		return valuesWhere(t, st, "set_aside")
	}
	read := func() []string {
		t.Helper()
		rows, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
		require.NoError(t, err)
		var got []string
		for _, x := range rows {
			got = append(got, string(x.value))
		}
		return got
	}
	now := time.Now()
	p.blocked = map[string]block{"b": {at: now, until: now.Add(time.Hour), failures: 1}}

	release := lockRow(t, st, ids["b1"])
	require.Equal(t, []string{"o1", "o2"}, read())
	require.Len(t, aside(), 2, "parkChunk rows")
	require.NotContains(t, aside(), "b1", "held by another transaction")
	release()
	require.Equal(t, []string{"o1", "o2"}, read())
	require.Equal(t, []string{"b1", "b2", "b3", "b4"}, aside())
	require.Empty(t, valuesWhere(t, st, "parked_until IS NOT NULL"), "set aside, not parked")
	parked, err := Parked(ctx, st.Pool)
	require.NoError(t, err)
	require.Zero(t, parked)

	// The backoff is over: the topic's rows set aside, then its newer one,
	// in id order with the other topic's.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE topic = 'o'`)
	require.NoError(t, err)
	insertValues(t, st, "b5", "o3")
	delete(p.blocked, "b")
	require.Equal(t, []string{"b1", "b2", "b3"}, read())
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE value IN ('b1', 'b2')`)
	require.NoError(t, err)
	require.Equal(t, []string{"b3", "b4", "b5"}, read())

	// A park takes the rows set aside and the others, oldest first: one cut
	// short has parked the oldest.
	_, err = st.Pool.Exec(ctx, `DELETE FROM outbox WHERE value = 'b3'`)
	require.NoError(t, err)
	release = lockRow(t, st, insertValues(t, st, "b6")["b6"])
	n, _, err := r.park(ctx, p, "b", "TOPIC_AUTHORIZATION_FAILED")
	require.Error(t, err, "the second chunk waits for b6")
	require.EqualValues(t, 2, n)
	require.Equal(t, []string{"b4", "b5"}, valuesWhere(t, st, "parked_until > now()"), "set aside, then not")
	release()
	_, _, err = r.park(ctx, p, "b", "TOPIC_AUTHORIZATION_FAILED")
	require.NoError(t, err)
	require.Equal(t, []string{"b4", "b5", "b6"}, valuesWhere(t, st, "parked_until > now()"))
}

// TestSetAsideBoundedPerQuery: a read of several partitions sets aside at
// most parkChunk rows in all, as one statement must end within
// queryTimeout; the next reads set aside the rest.
func TestSetAsideBoundedPerQuery(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r := &Relay{cfg: Config{Pool: st.Pool, BatchSize: 10, parkChunk: 3}}
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) SELECT p, 'b', 'b' FROM generate_series(0, 1) p, generate_series(1, 2)`)
	require.NoError(t, err)
	reqs := []selectReq{{partition: 0, upTo: math.MaxInt64, blocked: []string{"b"}}, {partition: 1, upTo: math.MaxInt64, blocked: []string{"b"}}}
	for _, want := range []int{3, 4} {
		res, err := r.selectRows(ctx, reqs)
		require.NoError(t, err)
		require.Empty(t, res[0].rows)
		require.Empty(t, res[1].rows)
		require.Len(t, valuesWhere(t, st, "set_aside"), want)
	}
}

// TestParkedTopicKeepsItsOrder: the rows of a topic that arrive during its
// park are not published while it lasts (the reads set them aside); when it
// ends, the parked rows go first, then those, in id order, and a row
// parked for good stays out.
func TestParkedTopicKeepsItsOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &payloads{}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, BatchSize: 2, PollInterval: time.Hour, Logger: zerolog.Nop(), parkChunk: 1})
	require.NoError(t, err)
	p := r.part(0)
	drain := func() {
		t.Helper()
		_, err := r.DrainOnce(ctx, 0)
		require.NoError(t, err)
	}
	published := func(topic string) []string {
		return slices.DeleteFunc(pub.got(), func(v string) bool { return !strings.HasPrefix(v, topic) })
	}

	insertValues(t, st, "d1", "o1", "d2")
	n, _, err := r.park(ctx, p, "d", "TOPIC_AUTHORIZATION_FAILED")
	require.NoError(t, err)
	require.EqualValues(t, 2, n)
	insertValues(t, st, "d3", "o2", "d4", "dX", "o3", "d5")
	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = 'infinity', park_reason = 'MESSAGE_TOO_LARGE' WHERE value = 'dX'`)
	require.NoError(t, err)
	for range 3 { // a row set aside per read (parkChunk)
		drain()
	}
	require.Equal(t, []string{"o1", "o2", "o3"}, published("o"))
	require.Empty(t, published("d"), "parked")
	require.Equal(t, []string{"d3", "d4", "d5"}, valuesWhere(t, st, "set_aside"))

	_, err = st.Pool.Exec(ctx, `UPDATE outbox SET parked_until = now() - interval '1 second' WHERE parked_until < 'infinity'`)
	require.NoError(t, err)
	insertValues(t, st, "d6", "o4")
	drain()
	require.Equal(t, []string{"d1", "d2", "d3", "d4", "d5", "d6"}, published("d"))
	require.Equal(t, []string{"o1", "o2", "o3", "o4"}, published("o"))
	require.Equal(t, []string{"dX"}, valuesWhere(t, st, "true"), "parked for good")
}

// insertValues writes a row of partition 0 for each value, in order, its
// topic the value's first letter, and returns their ids by value.
func insertValues(t *testing.T, st *store.Store, values ...string) map[string]int64 {
	t.Helper()
	ids := map[string]int64{}
	for _, v := range values {
		var id int64
		require.NoError(t, st.Pool.QueryRow(context.Background(), `INSERT INTO outbox (source_partition, topic, value)
			VALUES (0, left($1, 1), convert_to($1, 'UTF8')) RETURNING id`, v).Scan(&id))
		ids[v] = id
	}
	return ids
}

// valuesWhere returns the values of the rows where cond holds, in id order.
func valuesWhere(t *testing.T, st *store.Store, cond string) []string {
	t.Helper()
	var vs []string
	require.NoError(t, st.Pool.QueryRow(context.Background(),
		`SELECT coalesce(array_agg(convert_from(value, 'UTF8') ORDER BY id), '{}') FROM outbox WHERE `+cond).Scan(&vs))
	return vs
}
