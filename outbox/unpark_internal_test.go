package outbox

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// The rows of a park that ended go back in the walk a chunk a read; their
// topic is left out until the last is back, so none overtakes an older
// one still marked, and then all go in id order. A row another
// transaction holds is passed over until it is free.
func TestEndedParkGoesBackInChunks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewWith(t, store.Config{LockTimeout: 100 * time.Millisecond})
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), unparkChunk: 3})
	require.NoError(t, err)
	p := r.part(0)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value, parked_until)
		SELECT 0, CASE WHEN i IN (3, 7) THEN 'good' ELSE 'bad' END, '\x00',
		       CASE WHEN i IN (3, 7) THEN NULL ELSE now() - interval '1 second' END
		FROM generate_series(1, 10) i`)
	require.NoError(t, err)
	var bad []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FROM outbox WHERE topic = 'bad'`).Scan(&bad))
	require.Len(t, bad, 8)
	release := lockRow(t, st, bad[0])

	topicsOf := func(rows []row) (ts []string) {
		for _, x := range rows {
			ts = append(ts, x.topic)
		}
		return ts
	}
	for i, want := range []bool{true, true, false} { // 3 + 3 + 1 of the 7 free rows
		rows, unparking, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
		require.NoError(t, err)
		require.Equal(t, want, unparking, "read %d", i)
		require.NotContains(t, topicsOf(rows), "bad", "read %d: a row still marked holds its topic back", i)
		require.True(t, p.parked["bad"], "read %d", i)
	}
	release()
	rows, unparking, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.False(t, unparking)
	var got []int64
	for _, x := range rows {
		if x.topic == "bad" {
			got = append(got, x.id)
		}
	}
	require.Equal(t, bad, got, "every row, in id order, once the last is back")
	require.False(t, p.parked["bad"])
}

// A read of a partition with a parked topic walks only what it may
// return: the parked backlog, however long, costs it nothing, and the
// parks' statement looks at a chunk of the waiting rows, not a backlog of
// other topics' (a Kafka outage's).
func TestReadPassesOverTheParkedBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 100,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
			SELECT 0, 'lock.acquired', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED' FROM generate_series(1, 100000);
		INSERT INTO outbox (source_partition, topic, value) SELECT 0, 'locks.replies.x', '\x00' FROM generate_series(1, 3);
		ANALYZE outbox`)
	require.NoError(t, err)
	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	p := r.part(0)
	for range 7 { // past the five custom plans: the generic one the relay keeps using
		rows, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
		require.NoError(t, err)
		require.Len(t, rows, 3)
		require.True(t, p.parked["lock.acquired"])
	}
	for _, marker := range []string{"created_at FROM outbox", "UPDATE outbox SET parked_until = NULL"} {
		pages, plan := ex.Pages(t, marker)
		require.Less(t, pages, 100, "%d pages:\n%s", pages, plan)
		t.Logf("%d pages beside 100,000 parked rows:\n%s", pages, plan)
	}

	// A backlog of another topic (a Kafka outage's): the parks' statement
	// looks at a chunk of it, not all of it, on every read of the park.
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value) SELECT 0, 'locks.replies.y', '\x00' FROM generate_series(1, 100000)`)
	require.NoError(t, err)
	_, _, err = r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	pages, plan := ex.Pages(t, "UPDATE outbox SET parked_until = NULL")
	// A page a row at worst (this backlog's rows fill the room the parked
	// rows left, about one a page), a chunk's, and a few for the parks'
	// look-ups.
	require.Less(t, pages, unparkChunk+100, "a chunk's rows looked at, not the backlog's 100,000: %d pages:\n%s", pages, plan)
	t.Logf("%d pages beside 100,000 waiting rows:\n%s", pages, plan)
}

// The rows a parked topic gets during its park leave the walk too, parked
// until the same time, those among the oldest waiting rows a chunk a read:
// the reads do not walk them for the rest of the park. A statement's chunk
// is shared by the partitions of the read.
func TestRowsWrittenDuringAParkAreParked(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), BatchSize: 3, unparkChunk: 6})
	require.NoError(t, err)
	for _, part := range []int32{0, 1} {
		_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
			SELECT $1, 'bad', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED' FROM generate_series(1, 2)`, part)
		require.NoError(t, err)
		_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
			SELECT $1, CASE WHEN i = 3 THEN 'good' ELSE 'bad' END, '\x00' FROM generate_series(1, 6) i`, part)
		require.NoError(t, err)
	}
	unmarked := func(part int32) int {
		var n int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE source_partition = $1 AND topic = 'bad' AND parked_until IS NULL`, part).Scan(&n))
		return n
	}
	read := func() []selected {
		res, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, parks: true}, {partition: 1, upTo: math.MaxInt64, parks: true}})
		require.NoError(t, err)
		return res
	}
	// 3 waiting rows looked at a partition (a batch; half the chunk each): bad bad
	// good, then good bad bad, then good bad; then nothing more to do.
	for i, want := range []int{3, 1, 0, 0} {
		res := read()
		for _, s := range res {
			require.False(t, s.parkWork, "read %d: parking asks for no read at once", i)
			require.Len(t, s.rows, 1, "the good row")
			require.Equal(t, []string{"bad"}, s.parked)
		}
		require.Equal(t, want, unmarked(0), "read %d", i)
		require.Equal(t, want, unmarked(1), "read %d", i)
	}
	var untils, reasons int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(DISTINCT parked_until), count(DISTINCT park_reason) FROM outbox WHERE topic = 'bad' AND source_partition = 0`).Scan(&untils, &reasons))
	require.Equal(t, [2]int{1, 1}, [2]int{untils, reasons}, "until the park's end, for its reason")
}

// The rows a running park's topic got are found behind the rows of a
// topic the read leaves out in memory (backing off, probing), which the
// SELECT walks past too: a backlog of those does not hide them.
func TestRowsWrittenDuringAParkBehindABackoff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), BatchSize: 3, unparkChunk: 3})
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
		VALUES (0, 'bad', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED')`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, CASE WHEN i <= 10 THEN 'slow' ELSE 'bad' END, '\x00' FROM generate_series(1, 12) i`)
	require.NoError(t, err)
	_, err = r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, parks: true, blocked: []string{"slow"}}})
	require.NoError(t, err)
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE topic = 'bad' AND parked_until IS NULL`).Scan(&n))
	require.Zero(t, n, "the parked topic's new rows, behind ten of a topic backing off")
}

// The rows a read parks, those a parked topic got during its park, count
// in OnParked (lockworker_outbox_rows_parked_total) for the park's reason,
// as the rows a failed publish parks do.
func TestReadsReportTheRowsTheyPark(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	parkedBy := map[string]int{}
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), BatchSize: 3, unparkChunk: 3,
		OnParked: func(reason string, n int) { parkedBy[reason] += n }})
	require.NoError(t, err)
	p := r.part(0)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
		VALUES (0, 'bad', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED')`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, CASE WHEN i = 2 THEN 'good' ELSE 'bad' END, '\x00' FROM generate_series(1, 6) i`)
	require.NoError(t, err)
	for range 3 { // a batch of 3 waiting rows looked at a read: bad good bad, bad bad bad
		_, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
		require.NoError(t, err)
	}
	var parked int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) - 1 FROM outbox WHERE topic = 'bad' AND parked_until > now()`).Scan(&parked))
	require.Equal(t, 5, parked, "every row the topic got during its park")
	require.Equal(t, map[string]int{"TOPIC_AUTHORIZATION_FAILED": parked}, parkedBy)
}
