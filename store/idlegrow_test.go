package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// A transaction that idles longer than IdleInTransactionTimeout on every
// attempt, as one ending thousands of leases does while it builds its
// events after its last lock statement, still commits: PostgreSQL ends
// the first attempt for idling (25P03, or a broken pipe when the next
// write comes first), and the retry gives its own transaction twice the
// limit. One that does not idle out sends nothing but its own statements.
func TestIdleLimitGrowsAfterAnAttemptIdledOut(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	for _, batch := range []bool{false, true} {
		name := map[bool]string{false: "InTx", true: "InTxBatch"}[batch]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			traced := &testdb.Statements{}
			st := testdb.NewSchema(t).Open(t, store.Config{MaxConns: 1, IdleInTransactionTimeout: idle,
				RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond, Tracer: traced})
			_, err := st.Pool.Exec(ctx, `CREATE TABLE effects (id serial PRIMARY KEY, note text NOT NULL)`)
			require.NoError(t, err)

			// tx runs a transaction that reads its idle limit (each
			// attempt's to limits), then calls pause before its last
			// statement and COMMIT.
			var limits []string
			tx := func(ctx context.Context, pause func()) error {
				limits = nil
				if !batch {
					return st.InTx(ctx, func(tx pgx.Tx) error {
						var limit string
						if err := tx.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&limit); err != nil {
							return err
						}
						limits = append(limits, limit)
						pause()
						_, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ('x')`)
						return err
					})
				}
				return st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
					var limit string
					first.Queue(`SHOW idle_in_transaction_session_timeout`).QueryRow(func(row pgx.Row) error { return row.Scan(&limit) })
					if err := tx.SendBatch(ctx, first).Close(); err != nil {
						return err
					}
					limits = append(limits, limit)
					pause()
					last.Queue(`INSERT INTO effects (note) VALUES ('x')`)
					return nil
				})
			}

			traced.Take()
			require.NoError(t, tx(ctx, func() {}))
			require.Equal(t, []string{"300ms"}, limits)
			commit := map[bool]string{false: "commit", true: "COMMIT"}[batch] // pgx's, the store's
			require.Equal(t, []string{"begin", `SHOW idle_in_transaction_session_timeout`, `INSERT INTO effects (note) VALUES ('x')`, commit},
				traced.Take(), "nothing sent beyond the transaction's own statements")

			// Idle beyond the limit on every attempt: only a longer limit
			// lets one commit (the third, when the box is too slow for the
			// second's 150 ms to spare).
			tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, tx(tctx, func() { time.Sleep(idle * 3 / 2) }))
			require.GreaterOrEqual(t, len(limits), 2, "the first attempt idled out")
			require.Equal(t, []string{"300ms", "600ms", "1200ms", "2400ms"}[:len(limits)], limits)
			require.Equal(t, 2, countEffects(t, st), "only the committed attempts' inserts")

			// The next transaction has the configured limit again.
			require.NoError(t, tx(ctx, func() {}))
			require.Equal(t, []string{"300ms"}, limits)
		})
	}
}

// An idle limit the connection string gives wins over the retries' too:
// they leave it as it is.
func TestIdleLimitGivenKeptByRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	sch.URL = connstr.WithParam(sch.URL, "idle_in_transaction_session_timeout", "300")
	st := sch.Open(t, store.Config{MaxConns: 1, RetryBase: time.Millisecond})
	var limits []string
	require.NoError(t, st.InTx(ctx, func(tx pgx.Tx) error {
		var limit string
		if err := tx.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&limit); err != nil {
			return err
		}
		limits = append(limits, limit)
		if len(limits) == 1 {
			time.Sleep(450 * time.Millisecond) // past the given limit
		}
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	}))
	require.Equal(t, []string{"300ms", "300ms"}, limits)
}
