package outbox

import (
	"context"
	"errors"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
)

// The relay's statements are planned by their indexes, also in the generic
// plans a connection caches while the outbox holds a few rows (where
// PostgreSQL's own choice is a sequential scan, which the queue's dead rows
// make slower with every pass until the next VACUUM).
func TestRelayPlansByIndex(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	ids, created := insertRows(t, st.Pool, 300)
	refs := make([]rowRef, len(ids))
	for i := range ids {
		refs[i] = rowRef{ids[i], created[i]}
	}
	cfg := st.Pool.Config().Copy()
	cfg.MinConns, cfg.MaxConns = 0, 1 // one session: its prepared statements are the ones checked
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	r, err := New(Config{Publisher: &liar{}, Pool: pool, BatchSize: 10, MaxAttempts: math.MaxInt, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	for i := range 8 { // PostgreSQL settles on a generic plan after five custom ones
		_, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, acked: refs[i*10 : i*10+10], parks: true}})
		require.NoError(t, err)
		_, err = r.deleteRows(ctx, [][]rowRef{refs[100+i*10 : 100+i*10+10]})
		require.NoError(t, err)
		run := make([]row, 10)
		for j, ref := range refs[200+i*10 : 200+i*10+10] {
			run[j].rowRef = ref
		}
		require.NoError(t, r.failed(ctx, r.part(0), "t", run, errors.New("refused"), "TOPIC_AUTHORIZATION_FAILED"))
	}

	c, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer c.Release()
	rows, err := c.Query(ctx, `SELECT name, generic_plans, statement FROM pg_prepared_statements
		WHERE statement ~ '(FROM|UPDATE) outbox' AND statement !~ 'pg_prepared_statements'`)
	require.NoError(t, err)
	type stmt struct {
		name    string
		generic int64
		sql     string
	}
	stmts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (stmt, error) {
		var s stmt
		return s, r.Scan(&s.name, &s.generic, &s.sql)
	})
	require.NoError(t, err)
	require.Len(t, stmts, 5, "the DELETE of rows, of marks, the UPDATE of parks, the SELECT, and the count of a failed publish")
	// Read under the relay's settings, as every batch of the relay runs: a
	// cached plan invalidated meanwhile (autovacuum analyzing the outbox of
	// a parallel test's) is planned again under them.
	tx, err := c.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx)
	settings := &pgx.Batch{}
	queueSettings(settings)
	require.NoError(t, tx.SendBatch(ctx, settings).Close())
	for _, s := range stmts {
		require.Positive(t, s.generic, "the cached generic plan is the one checked: %s", s.sql)
		plan := testdb.CachedPlan(t, tx.Conn(), s.name)
		require.NotContains(t, plan, "Seq Scan", "%s\n%s", s.sql, plan)
		if strings.Contains(s.sql, byRowRef) {
			// Each pair looked up by the key, then the rows it found.
			require.Contains(t, plan, "Index Cond: (id = r.id)", "%s\n%s", s.sql, plan)
			require.Contains(t, plan, "Index Cond: (id = ANY (", "%s\n%s", s.sql, plan)
		}
	}
	// A custom plan too, as PostgreSQL makes for a statement's first
	// runs, of as many rows as a pass publishes: the rows looked up by
	// their ids, not the whole index walked.
	rows, err = tx.Query(ctx, "EXPLAIN "+deleteRowsSQL, ids[160:], created[160:])
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	require.Contains(t, plan, "Index Cond: (id = ANY (", plan)
	require.NotContains(t, plan, "Seq Scan", plan)

	var remaining int
	require.NoError(t, c.QueryRow(ctx, `SELECT count(*) FROM outbox`).Scan(&remaining))
	require.Equal(t, 300-160, remaining)
}

// The statements that match rows by rowRef, the count of a failed publish
// and the delete of published rows, handle a few rows for each pair under
// the generic plan the relay's sessions cache, whatever the outbox's
// statistics: here a VACUUM's that found it empty and kept its pages (a
// queue's, whose truncation the writers' locks refuse), which estimate it
// at one row. Joined with the pairs, its rows were then planned as a
// nested loop that scanned the pairs again for each row: 2,000 rows, four
// million compared. A pair whose created_at is not its row's (the id a
// lost row's, handed out again after a failover) matches nothing.
func TestByRowRefHandlesRowsInProportion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `ALTER TABLE outbox SET (autovacuum_enabled = off);
		INSERT INTO outbox (source_partition, topic, value) SELECT 0, 't', '\x00' FROM generate_series(1, 2000);
		DELETE FROM outbox`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `VACUUM (TRUNCATE false, ANALYZE) outbox`)
	require.NoError(t, err)
	ids, created := insertRows(t, st.Pool, 2000)
	refs := make([]rowRef, len(ids))
	run := make([]row, len(ids))
	var wrong []int64
	for i := range ids {
		refs[i] = rowRef{ids[i], created[i]}
		if i%100 == 0 {
			refs[i].created = refs[i].created.Add(time.Microsecond)
			wrong = append(wrong, ids[i])
		}
		run[i].rowRef = refs[i]
	}

	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: &liar{}, Pool: ex.Pool, MaxAttempts: math.MaxInt, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	require.NoError(t, r.failed(ctx, r.part(0), "t", run, errors.New("refused"), "TOPIC_AUTHORIZATION_FAILED"))
	_, err = r.deleteRows(ctx, [][]rowRef{refs})
	require.NoError(t, err)

	for _, marker := range []string{"UPDATE outbox SET attempts", "DELETE FROM outbox WHERE"} {
		var plan string
		for _, p := range ex.Plans() {
			if strings.Contains(p, marker) {
				plan = p
			}
		}
		require.NotEmpty(t, plan, "auto_explain reported no statement with %q", marker)
		t.Logf("%s", plan)
		for _, m := range regexp.MustCompile(`Function Scan on .*loops=(\d+)\)`).FindAllStringSubmatch(plan, -1) {
			require.Equal(t, "1", m[1], "the pairs scanned once:\n%s", plan)
		}
		require.LessOrEqual(t, planRows(t, plan), 10*len(refs), "a few rows handled for each pair:\n%s", plan)
	}
	var left []int64
	var attempts []int32
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id), array_agg(attempts ORDER BY id) FROM outbox`).Scan(&left, &attempts))
	require.Equal(t, wrong, left, "the rows whose pair's created_at is not theirs left")
	require.Equal(t, make([]int32, len(wrong)), attempts, "and not counted")
}

// planRows is the rows an auto_explain plan's nodes handled: each node's
// rows and those it removed (by a filter, a join filter, a recheck), times
// its loops, which the plan's counts are averages over.
func planRows(t *testing.T, plan string) int {
	t.Helper()
	node := regexp.MustCompile(`\(actual rows=(\d+) loops=(\d+)\)`)
	removed := regexp.MustCompile(`Rows Removed by [A-Za-z ]+: (\d+)`)
	total, loops := 0, 0
	for _, line := range strings.Split(plan, "\n") {
		if m := node.FindStringSubmatch(line); m != nil {
			rows, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			loops, err = strconv.Atoi(m[2])
			require.NoError(t, err)
			total += rows * loops
		} else if m := removed.FindStringSubmatch(line); m != nil {
			n, err := strconv.Atoi(m[1])
			require.NoError(t, err)
			total += n * loops
		}
	}
	require.Positive(t, total, "no rows counted in the plan:\n%s", plan)
	return total
}

// A read walks only its partitions' rows, in outbox_waiting, under the
// generic plan the relay's sessions use. A worker's partitions write to
// the outbox interleaved, and outbox_pkey walked in id order with the
// partition as a filter, which PostgreSQL prefers by its statistics (the
// heap is in id order, not the partitions'), goes through eleven other
// partitions' rows for each of its own, and through the whole table for
// a partition that has none waiting (3 here: its rows published).
func TestReadWalksOnlyItsPartitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, key, value, headers)
			SELECT i % 12, 'lock.state', convert_to('lock-' || i, 'UTF8'), decode(repeat('ab', 150), 'hex'), '\x02'
			FROM generate_series(1, 12000) i WHERE i % 12 <> 3;
		ANALYZE outbox`)
	require.NoError(t, err)
	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	reqs := []selectReq{{partition: 3, upTo: math.MaxInt64}, {partition: 7, upTo: math.MaxInt64}, {partition: 11, upTo: math.MaxInt64}}
	var ids []int64
	for range 7 { // past the five custom plans: the generic one the relay keeps using
		res, err := r.selectRows(ctx, reqs)
		require.NoError(t, err)
		ids = ids[:0]
		for i, s := range res {
			require.Len(t, s.rows, min(r.cfg.BatchSize, 1000*int(reqs[i].partition%3)))
			for _, x := range s.rows {
				n, err := strconv.Atoi(strings.TrimPrefix(string(x.key), "lock-"))
				require.NoError(t, err)
				require.EqualValues(t, reqs[i].partition, n%12, "row %d", x.id)
				ids = append(ids, x.id)
			}
		}
	}
	var heapPages int
	// Each partition's walk reads the pages its rows are on, whichever
	// other partition's walk read them too.
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT DISTINCT source_partition, (ctid::text::point)[0] FROM outbox WHERE id = ANY($1)) x`, ids).Scan(&heapPages))

	pages, plan := ex.Pages(t, "created_at FROM outbox")
	t.Logf("%d pages, %d rows read, on %d pages of the table:\n%s", pages, len(ids), heapPages, plan)
	walk := regexp.MustCompile(`->  Index Scan using outbox_waiting on outbox  .*\n( +[A-Z][^>\n]*\n)*`).FindString(plan)
	require.NotEmpty(t, walk, "the partitions walked in outbox_waiting:\n%s", plan)
	require.NotContains(t, walk, "Rows Removed by Filter", "no other partition's rows walked:\n%s", plan)
	require.NotRegexp(t, `Sort Key: (outbox|w)\.`, plan, "the walk's order serves the running sum:\n%s", plan)
	// The pages the rows are on, and the indexes' few.
	require.Less(t, pages, heapPages+30, "%d pages:\n%s", pages, plan)
}

// The parks' statement looks for a running park's new rows among a chunk
// of its partition's oldest waiting rows, walked in outbox_waiting and
// stopped at the chunk under the generic plan the relay's sessions use:
// not the other partitions' rows before and among them (outbox_pkey walked
// with the partition as a filter), nor the rest of the partition's backlog.
func TestParkingWalksAChunk(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 170,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	// A park of 'bad' running in partition 0; 20,000 rows of partitions 1
	// to 11; then 100,000 of partition 0, one in a hundred 'bad', among
	// 50,000 more of the others.
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value, parked_until, park_reason)
			VALUES (0, 'bad', '\x00', now() + interval '10 minutes', 'TOPIC_AUTHORIZATION_FAILED');
		INSERT INTO outbox (source_partition, topic, value)
			SELECT 1 + i % 11, 'other', decode(repeat('ab', 150), 'hex') FROM generate_series(1, 20000) i;
		INSERT INTO outbox (source_partition, topic, value)
			SELECT CASE WHEN i % 3 = 0 THEN 1 + i % 11 ELSE 0 END, CASE WHEN i % 100 = 2 THEN 'bad' ELSE 'other' END,
			       decode(repeat('ab', 150), 'hex')
			FROM generate_series(1, 150000) i;
		ANALYZE outbox`)
	require.NoError(t, err)
	// Partition 5's read asks for the parks too: it has none, and the two
	// share the statement's chunk.
	const share = unparkChunk / 2
	var chunk, want []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id), array_agg(id ORDER BY id) FILTER (WHERE topic = 'bad')
		FROM (SELECT id, topic FROM outbox WHERE source_partition = 0 AND parked_until IS NULL ORDER BY id LIMIT $1) x`, share).Scan(&chunk, &want))
	require.NotEmpty(t, want)
	var heapPages int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(DISTINCT (ctid::text::point)[0]) FROM outbox WHERE id = ANY($1)`, chunk).Scan(&heapPages))

	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	res, err := r.selectRows(ctx, []selectReq{{partition: 0, upTo: math.MaxInt64, parks: true}, {partition: 5, upTo: math.MaxInt64, parks: true}})
	require.NoError(t, err)
	var got []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FROM outbox WHERE parked_until IS NOT NULL AND id >= $1`, chunk[0]).Scan(&got))
	require.Equal(t, want, got, "the running park's topic's rows among the chunk, of its partition alone")
	require.Equal(t, map[string]int{"TOPIC_AUTHORIZATION_FAILED": len(want)}, res[0].parkedRows)

	pages, plan := ex.Pages(t, "UPDATE outbox SET parked_until = NULL")
	t.Logf("%d pages, the chunk's rows on %d pages of the table, %d parked:\n%s", pages, heapPages, len(want), plan)
	// The pages the chunk's rows are on; for each row parked, its look-ups
	// in outbox_pkey and its new entries in outbox_pkey and outbox_parked;
	// the parks' few look-ups.
	require.Less(t, pages, heapPages+20*len(want)+30, "%d pages:\n%s", pages, plan)
}

// A park walks its partition's stretch of outbox_waiting for its topic's
// rows under the generic plan, not outbox_pkey from the chunk's start
// with the partition as a filter, through every other partition's rows:
// here a backlog of theirs before the partition's.
func TestParkWalksOnlyItsPartition(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 103,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	// 100,000 rows of partitions 1 to 11, some 'bad'; then 2,000 of
	// partition 0, one in two hundred 'bad', among 1,000 more of the others.
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO outbox (source_partition, topic, value)
			SELECT 1 + i % 11, CASE WHEN i % 10 = 0 THEN 'bad' ELSE 'other' END, '\x00' FROM generate_series(1, 100000) i;
		INSERT INTO outbox (source_partition, topic, value)
			SELECT CASE WHEN i % 3 = 0 THEN 1 + i % 11 ELSE 0 END, CASE WHEN i % 200 = 1 THEN 'bad' ELSE 'other' END, '\x00'
			FROM generate_series(1, 3000) i;
		ANALYZE outbox`)
	require.NoError(t, err)
	var want []int64
	var heapPages int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FILTER (WHERE topic = 'bad'), count(DISTINCT (ctid::text::point)[0])
		FROM outbox WHERE source_partition = 0`).Scan(&want, &heapPages))

	ex := testdb.NewExplained(t, st.Pool)
	r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
	require.NoError(t, err)
	n, _, err := r.park(ctx, r.part(0), "bad", "TOPIC_AUTHORIZATION_FAILED")
	require.NoError(t, err)
	require.EqualValues(t, len(want), n)
	var got []int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT array_agg(id ORDER BY id) FROM outbox WHERE parked_until IS NOT NULL`).Scan(&got))
	require.Equal(t, want, got, "the topic's rows of the partition alone")

	pages, plan := ex.Pages(t, "UPDATE outbox SET parked_until = coalesce")
	t.Logf("%d pages, the partition's rows on %d pages of the table, %d parked:\n%s", pages, heapPages, n, plan)
	require.Regexp(t, `Index Scan using outbox_waiting on outbox  `, plan, "the partition walked in outbox_waiting")
	require.NotRegexp(t, `Sort Key: outbox\.`, plan, "in its order")
	// The pages the partition's rows are on, the index's, and for each
	// row parked its look-up in outbox_pkey and its new entries there and
	// in outbox_parked.
	require.Less(t, pages, heapPages+20*len(want)+30, "%d pages:\n%s", pages, plan)
}

// A read and a park walk their partition's stretch of outbox_waiting in
// order, stopping at their LIMIT, whatever the outbox's statistics and the
// plan_cache_mode the connection string may set. Never analyzed (a backlog
// before autovacuum's first ANALYZE, or with it off), PostgreSQL estimates
// the stretch at a few rows; under plan_cache_mode auto it plans the first
// runs, and any that look cheaper, for the parameters given, LIMIT
// included. A stretch estimated below the LIMIT is cheaper, as PostgreSQL
// sees it, collected with a bitmap and sorted: every run then reads the
// partition's whole backlog for a batch.
func TestPlansByIndexWhateverTheStatistics(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 128,000 outbox rows")
	}
	t.Parallel()
	ctx := context.Background()
	st := testdb.New(t)
	_, err := st.Pool.Exec(ctx, `ALTER TABLE outbox SET (autovacuum_enabled = off);
		INSERT INTO outbox (source_partition, topic, key, value, headers)
			SELECT i % 64, 'lock.state', convert_to('lock-' || i, 'UTF8'), decode(repeat('ab', 150), 'hex'), '\x02'
			FROM generate_series(1, 128000) i`)
	require.NoError(t, err)
	auto := st.Pool.Config().Copy()
	setup := auto.AfterConnect
	auto.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		if err := setup(ctx, c); err != nil {
			return err
		}
		_, err := c.Exec(ctx, `SET plan_cache_mode = auto`)
		return err
	}
	autoPool, err := pgxpool.NewWithConfig(ctx, auto)
	require.NoError(t, err)
	defer autoPool.Close()

	walk := regexp.MustCompile(`->  Index Scan using outbox_waiting on outbox  .*\n( +[A-Z][^>\n]*\n)*`)
	sorted := regexp.MustCompile(`Sort Key: (outbox|w)\.`)
	part := int32(0)
	check := func(t *testing.T, pool *pgxpool.Pool) {
		ex := testdb.NewExplained(t, pool)
		r, err := New(Config{Publisher: nopPublisher{}, Pool: ex.Pool, PollInterval: time.Hour, Logger: zerolog.Nop()})
		require.NoError(t, err)
		r.cfg.parkChunk = 100
		part++ // a partition of its own: the park takes its rows out of the walk
		var heapPages int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(DISTINCT (ctid::text::point)[0]) FROM (
			SELECT ctid FROM outbox WHERE source_partition = $1 AND parked_until IS NULL ORDER BY id LIMIT $2) x`, part, r.cfg.BatchSize).Scan(&heapPages))
		for i := range 7 { // the custom plans, and the generic one if PostgreSQL settles on it
			_, err := r.selectRows(ctx, []selectReq{{partition: part, upTo: math.MaxInt64}})
			require.NoError(t, err)
			pages, plan := ex.Pages(t, "created_at FROM outbox")
			require.NotEmpty(t, walk.FindString(plan), "run %d: the partition walked in outbox_waiting:\n%s", i, plan)
			require.NotRegexp(t, sorted, plan, "run %d: the walk's order serves the LIMIT:\n%s", i, plan)
			require.Less(t, pages, heapPages+30, "run %d: %d pages:\n%s", i, pages, plan)
		}
		n0 := len(ex.Plans())
		n, _, err := r.park(ctx, r.part(part), "lock.state", "TOPIC_AUTHORIZATION_FAILED")
		require.NoError(t, err)
		require.EqualValues(t, 128000/64, n)
		chunks := 0
		for _, plan := range ex.Plans()[n0:] {
			if !strings.Contains(plan, "UPDATE outbox SET parked_until = coalesce") {
				continue
			}
			chunks++
			require.NotEmpty(t, walk.FindString(plan), "chunk %d: the partition walked in outbox_waiting:\n%s", chunks, plan)
			require.NotRegexp(t, sorted, plan, "chunk %d: the walk's order serves the LIMIT:\n%s", chunks, plan)
		}
		require.Equal(t, int(n)/r.cfg.parkChunk+1, chunks)
	}
	for _, stats := range []string{"never analyzed", "analyzed"} {
		if stats == "analyzed" {
			_, err := st.Pool.Exec(ctx, `ANALYZE outbox`)
			require.NoError(t, err)
		}
		t.Run(stats+"/generic", func(t *testing.T) { check(t, st.Pool) })
		t.Run(stats+"/auto", func(t *testing.T) { check(t, autoPool) })
	}
}

// insertRows inserts n rows of partition 0 into the outbox and returns their
// ids and created_at, in id order.
func insertRows(t *testing.T, pool *pgxpool.Pool, n int) ([]int64, []time.Time) {
	t.Helper()
	var ids []int64
	var created []time.Time
	require.NoError(t, pool.QueryRow(context.Background(), `WITH n AS (INSERT INTO outbox (source_partition, topic, value)
		SELECT 0, 't', '\x00' FROM generate_series(1, $1::int) RETURNING id, created_at)
		SELECT array_agg(id ORDER BY id), array_agg(created_at ORDER BY id) FROM n`, n).Scan(&ids, &created))
	return ids, created
}
