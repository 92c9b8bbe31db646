package store_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// A transaction a read-only server refuses (a standby, or a failover's old
// primary that the pool's connections, made before, still reach) is
// retried as a transient error on connections made anew: it commits as
// soon as the connection string leads to a server that takes writes, here
// at once.
func TestReadOnlyServerRetriedOnNewConnections(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var retries []error
	st := testdb.NewSchema(t).Open(t, store.Config{MaxConns: 2, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		OnRetry: func(_ int, err error, _ time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			retries = append(retries, err)
		}})
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `CREATE TABLE effects (id serial PRIMARY KEY, note text NOT NULL UNIQUE)`)
	require.NoError(t, err)
	// Every connection of the pool turned read-only, as a fenced primary's.
	var held []*pgxpool.Conn
	for range 2 {
		c, err := st.Pool.Acquire(ctx)
		require.NoError(t, err)
		_, err = c.Exec(ctx, `SET default_transaction_read_only = on`)
		require.NoError(t, err)
		held = append(held, c)
	}
	for _, c := range held {
		c.Release()
	}

	// Bounded: retried on the same read-only connections, it would never end.
	tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, st.InTx(tctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(tctx, `INSERT INTO effects (note) VALUES ('once')`)
		return err
	}))
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, retries, "the read-only refusal was retried")
	var pgErr *pgconn.PgError
	require.ErrorAs(t, retries[0], &pgErr)
	require.Equal(t, "25006", pgErr.Code)
	require.ErrorIs(t, retries[0], store.ErrTransient)
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM effects`).Scan(&n))
	require.Equal(t, 1, n)
}

// A statement of its own (pruning, the relay's deletes) that a read-only
// server refuses fails as transient and resets the pool too: its next run,
// on a connection made anew, works.
func TestReadOnlyServerStatementResetsPool(t *testing.T) {
	t.Parallel()
	sch := testdb.NewSchema(t)
	st := sch.Open(t, store.Config{MaxConns: 1})
	ctx := context.Background()
	require.NoError(t, st.Migrate(ctx))
	c, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	_, err = c.Exec(ctx, `SET default_transaction_read_only = on`)
	require.NoError(t, err)
	c.Release()

	_, err = st.Prune(ctx, time.Hour, time.Hour, 10)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "25006", pgErr.Code)
	require.ErrorIs(t, err, store.ErrTransient)
	_, err = st.Prune(ctx, time.Hour, time.Hour, 10)
	require.NoError(t, err, "on a connection made anew")
}
