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
// forever; parked counts them. It counts the whole table, so call it for
// health pages, not per event.
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

// Parked counts the parked rows of every partition, from the partial index
// of parked rows (migration 006): cheap enough for every /health probe.
func Parked(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var n int64
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE parked_until > now()`).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting parked outbox rows: %w", err)
	}
	return n, nil
}
