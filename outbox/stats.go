package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Backlog says how much waits in the outbox of every partition: all rows,
// the parked ones among them, and the age of the oldest row not parked
// (zero when none), by the database clock. Parked rows are left out of the
// age: a row parked for good ('infinity') would otherwise hold it up
// forever; parked counts them. It reads the whole table, so call it for
// the database gauges' periodic read, not per probe or per event (Parked).
func Backlog(ctx context.Context, pool *pgxpool.Pool) (rows, parked int64, oldest time.Duration, err error) {
	var ageSeconds float64
	err = pool.QueryRow(ctx, `
		SELECT count(*),
		       count(*) FILTER (WHERE parked_until > now()),
		       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE parked_until IS NULL OR parked_until <= now())), 0)::float8
		FROM outbox`).Scan(&rows, &parked, &ageSeconds)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("reading outbox backlog: %w", err)
	}
	return rows, parked, max(0, time.Duration(ageSeconds*float64(time.Second))), nil
}

// ParkedCap bounds Parked's count.
const ParkedCap = 1000

// Parked counts the parked rows of every partition up to ParkedCap
// (ParkedCap says that many or more; Backlog counts them all), for every
// /health probe. The partial index outbox_parked is not small: a topic
// that cannot be written parks its whole backlog (Relay.park), and rows
// whose park ended stay in it until a read puts them back in the walk. So rather
// than count it all, which would outlast the probe's bound, Parked steps
// through its (partition, topic) pairs, one descent each, and reads at
// most ParkedCap parked entries: its cost grows with the pairs, not the
// rows. ORDER BY parked_until keeps each read a plain index scan, which
// LIMIT stops (a bitmap scan would read the pair's whole range).
func Parked(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	err := pool.QueryRow(ctx, `
		WITH RECURSIVE g(p, t) AS (
			(SELECT source_partition, topic FROM outbox WHERE parked_until IS NOT NULL ORDER BY source_partition, topic LIMIT 1)
			UNION ALL
			SELECT n.source_partition, n.topic FROM g, LATERAL (
				SELECT source_partition, topic FROM outbox
				WHERE parked_until IS NOT NULL AND (source_partition, topic) > (g.p, g.t)
				ORDER BY source_partition, topic LIMIT 1) n
		)
		SELECT count(*) FROM (
			SELECT FROM g, LATERAL (
				SELECT FROM outbox WHERE source_partition = g.p AND topic = g.t AND parked_until > now()
				ORDER BY parked_until LIMIT $1) r
			LIMIT $1) c`, ParkedCap).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting parked outbox rows: %w", err)
	}
	return n, nil
}
