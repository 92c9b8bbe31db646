package outbox

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// A read of large rows (dead-letter copies behind a park, a takeover's
// backlog) stops at maxHeldBytes rather than take its 500 rows: 500 of
// 100 kB would be 48 MiB, several times that once a pass made messages
// and records of them. The next read goes on where it stopped.
func TestReadOfLargeRowsStopsAtItsBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, 'locks.commands.dlq', decode(repeat('ab', 100000), 'hex') FROM generate_series(1, 500)`)
	require.NoError(t, err)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	p := r.part(0)

	rows, more, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.True(t, more, "the read stopped before the rows it may take")
	require.LessOrEqual(t, rowBytes(rows), maxHeldBytes)
	require.Len(t, rows, maxHeldBytes/100000)
	for _, x := range rows {
		p.acked = append(p.acked, x.rowRef)
	}
	next, _, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
	require.NoError(t, err)
	require.NotEmpty(t, next)
	require.Greater(t, next[0].id, rows[len(rows)-1].id, "on from where it stopped")
}

// A read stops at its bytes at a prefix of the partition's walk, in id
// order across topics, so each topic's rows go in order; at least one row,
// however large; the rows up to the bound exactly. A read it cut says
// nothing of the topics it found no rows of: their backoffs stay.
func TestReadBytesTakeAPrefix(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), readBytes: 1000})
	require.NoError(t, err)
	p := r.part(0)
	var ids []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `WITH n AS (
		INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, t, decode(repeat('ab', size), 'hex')
		FROM unnest('{1500, 400, 300, 200, 500, 100, 400}'::int[], '{a, a, b, a, later, b, a}'::text[]) WITH ORDINALITY AS x(size, t, i)
		ORDER BY i RETURNING id)
		SELECT array_agg(id ORDER BY id) FROM n`).Scan(&ids))
	now := time.Now()
	over := block{at: now.Add(-time.Minute), until: now}
	p.blocked = map[string]block{"later": over, "gone": over}

	var got [][]int64
	for range 4 {
		rows, more, err := r.selectBatch(ctx, p, math.MaxInt64, time.Time{})
		require.NoError(t, err)
		var read []int64
		for _, x := range rows {
			read = append(read, x.id)
			p.acked = append(p.acked, x.rowRef) // deleted by the next read
		}
		got = append(got, read)
		if !more {
			break
		}
		require.Contains(t, p.blocked, "later", "a read cut before its rows, after %v", read)
		require.Contains(t, p.blocked, "gone", "a read cut after %v", read)
	}
	require.Equal(t, [][]int64{
		ids[:1],  // 1500 alone, past the bound
		ids[1:4], // 400 + 300 + 200: 500 more would pass it
		ids[4:7], // 500 + 100 + 400: exactly the bound, and no row left
	}, got)
	require.NotContains(t, p.blocked, "gone", "the read that was not cut found it no rows")
}

// Partitions whose reads run together share the bytes of one read: a
// takeover's read of all of them holds no more than one of a partition
// alone. Each takes at least a row.
func TestMergedReadsShareTheBytes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), readBytes: 1200})
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT i % 3, 't', decode(repeat('ab', CASE WHEN i % 3 = 2 THEN 700 ELSE 300 END), 'hex') FROM generate_series(0, 11) i`)
	require.NoError(t, err)

	alone, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64}})
	require.NoError(t, err)
	require.Len(t, alone[0].rows, 4, "1,200 bytes: four rows of 300")
	require.False(t, alone[0].full, "all of them")

	res, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64}, {partition: 1, upTo: math.MaxInt64}, {partition: 2, upTo: math.MaxInt64}})
	require.NoError(t, err)
	for i, s := range res {
		require.True(t, s.full, "partition %d", i)
	}
	require.Len(t, res[0].rows, 1, "a third of 1,200 bytes: a row of 300")
	require.Len(t, res[1].rows, 1)
	require.Len(t, res[2].rows, 1, "a row of 700, over its share: at least one")
	require.Equal(t, 1300, rowBytes(res[0].rows)+rowBytes(res[1].rows)+rowBytes(res[2].rows))
}

// recordingPublisher records each Publish call's topic, rows' values (the
// row id, first 8 bytes) and bytes.
type recordingPublisher struct {
	mu    sync.Mutex
	calls []publishCall
}

type publishCall struct {
	topic string
	bytes int
	ids   []string
}

func (p *recordingPublisher) Publish(topic string, msgs ...*message.Message) error {
	c := publishCall{topic: topic}
	for _, m := range msgs {
		c.bytes += len(m.Payload)
		c.ids = append(c.ids, string(m.Payload[:8]))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, c)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// A partition's backlog of large rows goes in reads of its bytes, each
// topic's rows in id order, every row once.
func TestLargeBacklogGoesInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	pub := &recordingPublisher{}
	r, err := New(Config{Publisher: pub, Pool: st.Pool, PollInterval: time.Hour, Logger: zerolog.Nop(), readBytes: 5000})
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, CASE WHEN i % 3 = 0 THEN 'a' ELSE 'b' END, convert_to(lpad(i::text, 8, '0'), 'UTF8') || decode(repeat('ab', 1000), 'hex')
		FROM generate_series(1, 30) i`)
	require.NoError(t, err)

	n, err := r.DrainOnce(ctx, 0)
	require.NoError(t, err)
	require.Equal(t, 30, n)
	byTopic := map[string][]string{}
	for _, c := range pub.calls {
		require.LessOrEqual(t, c.bytes, 5000, "a call of one read's rows")
		byTopic[c.topic] = append(byTopic[c.topic], c.ids...)
	}
	var a, b []string
	for i := 1; i <= 30; i++ {
		if id := fmt.Sprintf("%08d", i); i%3 == 0 {
			a = append(a, id)
		} else {
			b = append(b, id)
		}
	}
	require.Equal(t, map[string][]string{"a": a, "b": b}, byTopic)
	require.Greater(t, len(pub.calls), 2, "several reads")
}

// The common read, of small rows (a lock state's 100–200 bytes), reads the
// pages it did before the byte bound: the running sum rides on the same
// walk of the index, after its LIMIT, with no sort of its own. Not the
// time it took: the window keeps every walked row, 50–70% more than the
// bare walk at 500 rows. A narrow window with the kept rows fetched again
// by ctid, or a second walk, measured slower still, and reads their pages
// again.
func TestReadOfSmallRowsPlan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, key, value, headers)
			SELECT i % 2, 'lock.state', convert_to('lock-' || i, 'UTF8'), decode(repeat('ab', 150), 'hex'), '\x02' FROM generate_series(1, 2000) i;
		ANALYZE outbox`)
	require.NoError(t, err)
	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	for range 7 { // past the five custom plans: the generic one the relay keeps using
		res, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64}, {partition: 1, upTo: math.MaxInt64}})
		require.NoError(t, err)
		for _, s := range res {
			require.Len(t, s.rows, r.cfg.BatchSize)
		}
	}
	pages, plan := ex.Pages(t, "created_at FROM outbox")
	t.Logf("%d pages, two partitions of 1,000 small rows, 500 read of each:\n%s", pages, plan)
	require.NotContains(t, plan, "Seq Scan", plan)
	require.NotContains(t, plan, "Sort Key: outbox.", "the walk's order serves the running sum:\n%s", plan)
	require.Less(t, pages, 100, "%d pages:\n%s", pages, plan)
}
