package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	cryptorand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/tern/v2/migrate"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/migrations"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// schemaTables are the tables the migrations create.
var schemaTables = []string{"consumer_offsets", "consumer_topics", "lock_events", "lock_holders", "lock_waiters", "locks", "lockworker_schema_compat", "lockworker_schema_version", "outbox", "outbox_marks", "processed_requests", "sessions", "state_topics"}

// requireSchema checks that the store's schema holds each table once and the
// version table says every migration file was applied.
func requireSchema(t *testing.T, st *store.Store) {
	t.Helper()
	ctx := context.Background()
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.NotEmpty(t, files)

	var versions, version int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*), max(version) FROM `+store.VersionTable).Scan(&versions, &version))
	require.Equal(t, 1, versions)
	require.Equal(t, len(files), version)

	rows, err := st.Pool.Query(ctx, `SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	require.NoError(t, err)
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, schemaTables, tables)

	var seqs int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM information_schema.sequences WHERE sequence_schema = current_schema() AND sequence_name = 'fencing_tokens'`).Scan(&seqs))
	require.Equal(t, 1, seqs)
}

func TestMigrateTwice(t *testing.T) {
	t.Parallel()
	st := testdb.New(t) // migrated once
	_, err := st.Pool.Exec(context.Background(), `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('g', 't', 0, 42)`)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(context.Background()))
	requireSchema(t, st)
	offsets, err := st.Offsets(context.Background(), "g", "t")
	require.NoError(t, err)
	require.Equal(t, map[int32]store.Position{0: {Next: 42, Epoch: -1}}, offsets, "a second Migrate keeps the data")
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	schema := testdb.NewSchema(t)
	stores := []*store.Store{schema.Open(t, store.Config{}), schema.Open(t, store.Config{}), schema.Open(t, store.Config{})}
	errs := make([]error, len(stores))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, st := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = st.Migrate(context.Background())
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for _, st := range stores {
		requireSchema(t, st)
	}
}

// newStore opens a migrated store whose retries are recorded.
func newStore(t *testing.T) (*store.Store, *[]error) {
	t.Helper()
	var mu sync.Mutex
	retries := &[]error{}
	st := testdb.NewSchema(t).Open(t, store.Config{
		RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		OnRetry: func(attempt int, err error, delay time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			*retries = append(*retries, err)
		},
	})
	require.NoError(t, st.Migrate(context.Background()))
	_, err := st.Pool.Exec(context.Background(), `CREATE TABLE effects (id serial PRIMARY KEY, note text NOT NULL UNIQUE)`)
	require.NoError(t, err)
	return st, retries
}

func countEffects(t *testing.T, st *store.Store) int {
	t.Helper()
	var n int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM effects`).Scan(&n))
	return n
}

func TestInTxRetriesSerializationFailure(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	calls := 0
	err := st.InTx(context.Background(), func(tx pgx.Tx) error {
		calls++
		if _, err := tx.Exec(context.Background(), `INSERT INTO effects (note) VALUES ('once')`); err != nil {
			return err
		}
		if calls == 1 {
			return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	require.Equal(t, 1, countEffects(t, st), "the failed attempt rolled back: the effect happened once")
	require.Len(t, *retries, 1)
	require.ErrorIs(t, (*retries)[0], store.ErrTransient)
}

// A server out of its own resources (disk full, out of memory, a configured
// limit, an I/O error) refuses a transaction for no fault of its records:
// InTx retries it as transient, promptly, not as a bad batch. A program
// limit (54000) is not retried: a statement too large for PostgreSQL is
// refused again.
func TestInTxRetriesServerOutOfResources(t *testing.T) {
	t.Parallel()
	for _, code := range []string{"53100", "53200", "53400", "58030", "54000"} {
		st, retries := newStore(t)
		calls := 0
		refused := &pgconn.PgError{Code: code, Message: "refused with " + code}
		err := st.InTx(context.Background(), func(tx pgx.Tx) error {
			calls++
			if calls == 1 {
				return refused
			}
			return nil
		})
		if code == "54000" {
			require.ErrorIs(t, err, refused)
			require.NotErrorIs(t, err, store.ErrTransient)
			require.False(t, store.OutOfResources(err))
			require.Empty(t, *retries)
			continue
		}
		require.NoError(t, err, code)
		require.Equal(t, 2, calls, code)
		require.Len(t, *retries, 1, code)
		require.ErrorIs(t, (*retries)[0], store.ErrTransient, code)
		require.True(t, store.OutOfResources((*retries)[0]), code)
	}
}

// TestInTxRetriesRealSerializationConflict: two SERIALIZABLE transactions
// that each read what the other writes; PostgreSQL fails one with 40001 and
// InTx runs it again.
func TestInTxRetriesRealSerializationConflict(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	var bothRead sync.WaitGroup
	bothRead.Add(2)
	var attempts atomic.Int32
	run := func(note string) error {
		first := true
		return st.InTx(context.Background(), func(tx pgx.Tx) error {
			attempts.Add(1)
			ctx := context.Background()
			if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL SERIALIZABLE`); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM effects`).Scan(&n); err != nil {
				return err
			}
			if first {
				// Both read before either writes: a write skew.
				first = false
				bothRead.Done()
				bothRead.Wait()
			}
			_, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ($1)`, fmt.Sprintf("%s saw %d", note, n))
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- run("a") }()
	go func() { errs <- run("b") }()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)
	require.Equal(t, 2, countEffects(t, st))
	// PostgreSQL fails one of them with 40001, or in some interleavings
	// both, which then run again; every failure was retried.
	n := attempts.Load()
	require.GreaterOrEqual(t, n, int32(3), "one of the two ran again")
	require.Len(t, *retries, int(n)-2)
	for _, err := range *retries {
		require.ErrorIs(t, err, store.ErrTransient)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "40001", pgErr.Code)
	}
	// The retry saw the other's row.
	var notes []string
	rows, err := st.Pool.Query(context.Background(), `SELECT note FROM effects ORDER BY id`)
	require.NoError(t, err)
	notes, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(notes[0], "saw 0") && strings.HasSuffix(notes[1], "saw 1"), "notes: %v", notes)
}

func TestInTxRetriesLostConnection(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	calls := 0
	var pids []uint32
	err := st.InTx(context.Background(), func(tx pgx.Tx) error {
		calls++
		pids = append(pids, tx.Conn().PgConn().PID())
		if _, err := tx.Exec(context.Background(), `INSERT INTO effects (note) VALUES ('once')`); err != nil {
			return err
		}
		if calls == 1 {
			_, err := tx.Exec(context.Background(), `SELECT pg_terminate_backend(pg_backend_pid())`)
			require.Error(t, err, "the connection is gone")
			return err
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	require.NotEqual(t, pids[0], pids[1], "the retry ran on a new connection")
	require.Equal(t, 1, countEffects(t, st))
	require.Len(t, *retries, 1)
	require.ErrorIs(t, (*retries)[0], store.ErrTransient)
	// The pool is healthy afterwards.
	require.NoError(t, st.Pool.Ping(context.Background()))
}

// InTxBatch begins the transaction with its first batch: what the batch and
// later statements write commits together, and a failure rolls all of it
// back.
func TestInTxBatch(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	var pid, inTx uint32
	err := st.InTxBatch(ctx, func(tx pgx.Tx, first, _ *pgx.Batch) error {
		first.Queue(`INSERT INTO effects (note) VALUES ('first')`)
		first.Queue(`SELECT pg_backend_pid()`).QueryRow(func(row pgx.Row) error { return row.Scan(&pid) })
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		// The same transaction: the session's own backend, inside a block.
		require.NoError(t, tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&inTx))
		require.Equal(t, byte('T'), tx.Conn().PgConn().TxStatus())
		_, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ('later')`)
		return err
	})
	require.NoError(t, err)
	require.Equal(t, pid, inTx)
	require.Equal(t, 2, countEffects(t, st))

	err = st.InTxBatch(ctx, func(tx pgx.Tx, first, _ *pgx.Batch) error {
		first.Queue(`INSERT INTO effects (note) VALUES ('rolled back')`)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		return errors.New("changed my mind")
	})
	require.EqualError(t, err, "changed my mind")
	require.Equal(t, 2, countEffects(t, st), "rolled back")

	// Nothing sent: nothing began, nothing to commit.
	require.NoError(t, st.InTxBatch(ctx, func(pgx.Tx, *pgx.Batch, *pgx.Batch) error { return nil }))
	// Another batch before the first is refused.
	err = st.InTxBatch(ctx, func(tx pgx.Tx, _, _ *pgx.Batch) error {
		other := &pgx.Batch{}
		other.Queue(`SELECT 1`)
		return tx.SendBatch(ctx, other).Close()
	})
	require.ErrorContains(t, err, "first batch")
	require.NoError(t, st.Pool.Ping(ctx), "no connection was left behind")
	require.Zero(t, st.Pool.Stat().AcquiredConns())
}

// InTxBatch's last batch travels with COMMIT: its statements commit with the
// rest, a failing one rolls everything back (COMMIT is not reached), and a
// transaction that only fills last is one batch of BEGIN, statements and
// COMMIT. The connection always goes back outside a transaction.
func TestInTxBatchLast(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx := context.Background()
	var lastID int64
	err := st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
		first.Queue(`INSERT INTO effects (note) VALUES ('first')`)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		last.Queue(`INSERT INTO effects (note) VALUES ('last') RETURNING id`).QueryRow(func(row pgx.Row) error { return row.Scan(&lastID) })
		return nil
	})
	require.NoError(t, err)
	require.NotZero(t, lastID, "the last batch's results are read")
	require.Equal(t, 2, countEffects(t, st))

	err = st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
		first.Queue(`INSERT INTO effects (note) VALUES ('rolled back')`)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		last.Queue(`INSERT INTO effects (note) VALUES ('rolled back too')`)
		last.Queue(`SELECT 1/0`)
		return nil
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "22012", pgErr.Code)
	require.ErrorIs(t, err, store.ErrInvalidData)
	require.Equal(t, 2, countEffects(t, st), "the failed last batch rolled the whole transaction back")

	err = st.InTxBatch(ctx, func(_ pgx.Tx, _, last *pgx.Batch) error {
		last.Queue(`INSERT INTO effects (note) VALUES ('only last')`)
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 3, countEffects(t, st))

	// fn failing after the last batch was filled: nothing of it is sent.
	err = st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
		first.Queue(`INSERT INTO effects (note) VALUES ('not kept')`)
		if err := tx.SendBatch(ctx, first).Close(); err != nil {
			return err
		}
		last.Queue(`INSERT INTO effects (note) VALUES ('never sent')`)
		return errors.New("changed my mind")
	})
	require.EqualError(t, err, "changed my mind")
	require.Equal(t, 3, countEffects(t, st))
	require.Zero(t, st.Pool.Stat().AcquiredConns())
}

// InTxBatch retries as InTx does: a connection lost with the first batch,
// or with the last batch and COMMIT, runs the whole function again (the
// caller's guards make a second run of committed work harmless; here
// nothing committed).
func TestInTxBatchRetriesLostConnection(t *testing.T) {
	for _, where := range []string{"first", "last"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			st, retries := newStore(t)
			ctx := context.Background()
			calls := 0
			err := st.InTxBatch(ctx, func(tx pgx.Tx, first, last *pgx.Batch) error {
				calls++
				first.Queue(`INSERT INTO effects (note) VALUES ('once')`)
				if calls == 1 && where == "first" {
					first.Queue(`SELECT pg_terminate_backend(pg_backend_pid())`)
				}
				if err := tx.SendBatch(ctx, first).Close(); err != nil {
					return err
				}
				if calls == 1 && where == "last" {
					last.Queue(`SELECT pg_terminate_backend(pg_backend_pid())`)
				}
				return nil
			})
			require.NoError(t, err)
			require.Equal(t, 2, calls)
			require.Equal(t, 1, countEffects(t, st))
			require.Len(t, *retries, 1)
			require.ErrorIs(t, (*retries)[0], store.ErrTransient)
			require.Zero(t, st.Pool.Stat().AcquiredConns())
		})
	}
}

// TestInTxRetriesConnectionKilledFromOutside: the backend is terminated by
// another session while the transaction is open; the commit fails and the
// whole transaction runs again.
func TestInTxRetriesConnectionKilledFromOutside(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	calls := 0
	err := st.InTx(context.Background(), func(tx pgx.Tx) error {
		calls++
		if _, err := tx.Exec(context.Background(), `INSERT INTO effects (note) VALUES ('once')`); err != nil {
			return err
		}
		if calls == 1 {
			pid := tx.Conn().PgConn().PID()
			var ok bool
			require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok))
			require.True(t, ok)
		}
		return nil
	})
	require.NoError(t, err)
	require.Equal(t, 2, calls)
	require.Equal(t, 1, countEffects(t, st))
	require.Len(t, *retries, 1)
}

// sentinels are the store's error classes; an error carries at most one.
var sentinels = []error{store.ErrTransient, store.ErrInvalidData, store.ErrConstraint, store.ErrAccessDenied, store.ErrNoDatabase, store.ErrOffsetMoved}

// requireClass checks that err carries the sentinel want (nil: none of them)
// and no other, and that the PostgreSQL error, when code is set, is still
// there to read.
func requireClass(t *testing.T, err error, want error, code string) {
	t.Helper()
	for _, s := range sentinels {
		if s == want {
			require.ErrorIs(t, err, s)
			require.Equal(t, 1, strings.Count(err.Error(), s.Error()), "wrapped once: %v", err)
		} else {
			require.NotErrorIs(t, err, s)
		}
	}
	if code != "" {
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr, "the cause is kept")
		require.Equal(t, code, pgErr.Code)
	}
}

// urlAs is the test database's URL for user (with its password, if any)
// and database.
func urlAs(t *testing.T, user, database string) string {
	return connstr.WithParam(connstr.WithParam(testdb.URL(), "user", user), "dbname", database)
}

// newRole creates a role for the test (dropped when it ends), or skips the
// test when the test user may not create roles. With login, it may log in
// with the test URL's password, if any; it never may create databases.
func newRole(t *testing.T, st *store.Store, login bool) string {
	t.Helper()
	ctx := context.Background()
	var may bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user`).Scan(&may))
	if !may {
		testdb.SkipMissing(t, "the test user may not create roles: it needs to be a superuser or have CREATEROLE (ALTER ROLE <role> CREATEROLE)")
	}
	name := fmt.Sprintf("lwtest_role_%08x", rand.Uint32())
	sql := `CREATE ROLE ` + name + ` NOSUPERUSER NOCREATEDB NOCREATEROLE`
	if login {
		sql += ` LOGIN`
		if cfg, err := pgx.ParseConfig(testdb.URL()); err == nil && cfg.Password != "" {
			sql += ` PASSWORD ` + quoteLiteral(cfg.Password)
		}
	}
	_, err := st.Pool.Exec(ctx, sql)
	require.NoError(t, err)
	t.Cleanup(func() {
		if _, err := st.Pool.Exec(context.Background(), `DROP ROLE IF EXISTS `+name); err != nil {
			t.Errorf("dropping role %s: %v", name, err)
		}
	})
	return name
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// TestInTxDoesNotRetryOtherErrors: errors that a retry cannot cure are
// returned at once, rolled back, with the sentinel of their class.
func TestInTxDoesNotRetryOtherErrors(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	boom := errors.New("boom")
	exec := func(sql string) func(tx pgx.Tx) error {
		return func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), sql)
			return err
		}
	}
	cases := []struct {
		name string
		fn   func(tx pgx.Tx) error
		is   error  // the sentinel the error carries; nil: none
		code string // its SQLSTATE; "": not a PostgreSQL error
	}{
		{"an error of fn", func(tx pgx.Tx) error { return boom }, nil, ""},
		{"a syntax error", exec(`SELEKT 1`), nil, "42601"},
		{"a missing table", exec(`SELECT * FROM no_such_table`), nil, "42P01"},
		{"division by zero", exec(`SELECT 1/0`), store.ErrInvalidData, "22012"},
		{"NUL in jsonb", exec(`SELECT '"\u0000"'::jsonb`), store.ErrInvalidData, "22P05"},
		{"text that is no integer", func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), `SELECT $1::text::int`, "twelve")
			return err
		}, store.ErrInvalidData, "22P02"},
		{"an integer out of range", exec(`SELECT 2147483647::int + 1`), store.ErrInvalidData, "22003"},
		{"a unique violation", exec(`INSERT INTO effects (note) VALUES ('dup'), ('dup')`), store.ErrConstraint, "23505"},
		{"a duplicate key in a temporary table", func(tx pgx.Tx) error {
			ctx := context.Background()
			if _, err := tx.Exec(ctx, `CREATE TEMPORARY TABLE scratch (k int PRIMARY KEY) ON COMMIT DROP`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO scratch VALUES (1)`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO scratch VALUES (1)`)
			return err
		}, store.ErrConstraint, "23505"},
		{"a not-null violation", exec(`INSERT INTO effects (note) VALUES (NULL)`), store.ErrConstraint, "23502"},
		{"a check violation from the schema", exec(`INSERT INTO locks (lock_name, status, source_partition) VALUES ('x', 'stolen', 0)`),
			store.ErrConstraint, "23514"},
		{"fn wraps the PostgreSQL error", func(tx pgx.Tx) error {
			_, err := tx.Exec(context.Background(), `SELECT 1/0`)
			return fmt.Errorf("computing: %w", err)
		}, store.ErrInvalidData, "22012"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := st.InTx(context.Background(), func(tx pgx.Tx) error {
				calls++
				if _, err := tx.Exec(context.Background(), `INSERT INTO effects (note) VALUES ($1)`, tc.name); err != nil {
					return err
				}
				return tc.fn(tx)
			})
			require.Error(t, err)
			requireClass(t, err, tc.is, tc.code)
			if tc.code == "" {
				require.ErrorIs(t, err, boom)
			}
			require.Equal(t, 1, calls, "no retry")
			require.Zero(t, countEffects(t, st), "rolled back")
			require.Empty(t, *retries)
		})
	}

	t.Run("a missing privilege", func(t *testing.T) {
		role := newRole(t, st, false)
		calls := 0
		err := st.InTx(context.Background(), func(tx pgx.Tx) error {
			calls++
			ctx := context.Background()
			if _, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ('before SET ROLE')`); err != nil {
				return err
			}
			var schema string
			if err := tx.QueryRow(ctx, `SELECT current_schema()::text`).Scan(&schema); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role); err != nil {
				return err
			}
			// Named with its schema: search_path skips a schema the role may
			// not use, which would make this 42P01 instead.
			_, err := tx.Exec(ctx, `INSERT INTO `+pgx.Identifier{schema, "effects"}.Sanitize()+` (note) VALUES ('as `+role+`')`)
			return err
		})
		requireClass(t, err, store.ErrAccessDenied, "42501")
		require.Equal(t, 1, calls, "no retry")
		require.Zero(t, countEffects(t, st), "rolled back")
		require.Empty(t, *retries)
		var user string
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT current_user::text`).Scan(&user))
		require.NotEqual(t, role, user, "SET LOCAL ended with the transaction")
	})
}

// TestInTxRetriesRealDeadlock: two transactions lock two rows in opposite
// order; PostgreSQL aborts one with 40P01 (after deadlock_timeout) and InTx
// runs it again, until both committed.
func TestInTxRetriesRealDeadlock(t *testing.T) {
	t.Parallel()
	st, retries := newStore(t)
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `CREATE TABLE pair (id int PRIMARY KEY, n int NOT NULL DEFAULT 0); INSERT INTO pair (id) VALUES (1), (2)`)
	require.NoError(t, err)

	held := [2]chan struct{}{make(chan struct{}), make(chan struct{})}
	var calls [2]atomic.Int32
	lock := func(tx pgx.Tx, id int) error {
		var got int
		return tx.QueryRow(ctx, `SELECT id FROM pair WHERE id = $1 FOR UPDATE`, id).Scan(&got)
	}
	// run is transaction i: it locks row first, then row second.
	run := func(i, first, second int) error {
		return st.InTx(ctx, func(tx pgx.Tx) error {
			attempt := calls[i].Add(1)
			if err := lock(tx, first); err != nil {
				return err
			}
			if attempt == 1 {
				// Both hold their first row before either asks for its second.
				close(held[i])
				select {
				case <-held[1-i]:
				case <-time.After(10 * time.Second):
					return errors.New("the other transaction never locked its first row")
				}
			}
			if err := lock(tx, second); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `UPDATE pair SET n = n + 1`)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- run(0, 1, 2) }()
	go func() { errs <- run(1, 2, 1) }()
	require.NoError(t, <-errs)
	require.NoError(t, <-errs)

	// Usually one of the two runs again once; on a loaded machine the retry
	// can lock its first row before the other took its second, and the two
	// deadlock again: every extra run is a retry of a deadlock.
	require.NotEmpty(t, *retries, "one of the two ran again")
	require.Len(t, *retries, int(calls[0].Load()+calls[1].Load())-2, "each extra run is a retry")
	for _, err := range *retries {
		// Found after deadlock_timeout (1 s), before lock_timeout (2 s).
		requireClass(t, err, store.ErrTransient, "40P01")
	}
	require.Equal(t, int64(4), scalar(t, st, `SELECT sum(n) FROM pair`), "each transaction's update applied once, to both rows")
}

func scalar(t *testing.T, st *store.Store, sql string) int64 {
	t.Helper()
	var v int64
	require.NoError(t, st.Pool.QueryRow(context.Background(), sql).Scan(&v))
	return v
}

// TestOpenTranslatesErrors: a role that cannot log in, and a database that
// is missing and may not be created, give their sentinels.
func TestOpenTranslatesErrors(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	open := func(url string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := store.Open(ctx, store.Config{URL: url, MaxConns: 1})
		if err == nil {
			st.Close()
		}
		return err
	}

	t.Run("no such role", func(t *testing.T) {
		err := open(urlAs(t, fmt.Sprintf("lwtest_nobody_%08x", rand.Uint32()), st.Pool.Config().ConnConfig.Database))
		require.Error(t, err)
		requireClass(t, err, store.ErrAccessDenied, "28000")
	})

	t.Run("missing database the role may not create", func(t *testing.T) {
		role := newRole(t, st, true)
		name := fmt.Sprintf("lwtest_nocreate_%08x", rand.Uint32())
		err := open(urlAs(t, role, name))
		require.Error(t, err)
		require.ErrorIs(t, err, store.ErrNoDatabase)
		require.ErrorIs(t, err, store.ErrAccessDenied, "creating it was refused")
		require.NotErrorIs(t, err, store.ErrTransient)
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "42501", pgErr.Code)
		require.Contains(t, err.Error(), name)
		require.Zero(t, scalar(t, st, `SELECT count(*) FROM pg_database WHERE datname = '`+name+`'`))
	})
}

func TestInTxStopsRetryingWhenContextEnds(t *testing.T) {
	t.Parallel()
	st, _ := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	calls := 0
	err := st.InTx(ctx, func(tx pgx.Tx) error {
		calls++
		return &pgconn.PgError{Code: "40P01", Message: "deadlock detected"}
	})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, store.ErrTransient)
	require.Greater(t, calls, 1)
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	base, maxDelay := 100*time.Millisecond, 5*time.Second
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}
	for attempt := 1; attempt < len(want); attempt++ {
		for range 200 {
			d := store.Backoff(base, maxDelay, attempt)
			require.LessOrEqual(t, d, want[attempt], "attempt %d", attempt)
			require.GreaterOrEqual(t, d, want[attempt]*4/5, "attempt %d: at most 20%% jitter", attempt)
		}
	}
	for _, attempt := range []int{20, 64, 1000} {
		d := store.Backoff(base, maxDelay, attempt)
		require.LessOrEqual(t, d, maxDelay, "capped, no overflow at attempt %d", attempt)
		require.GreaterOrEqual(t, d, maxDelay*4/5)
	}
	// Jitter spreads retries out.
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[store.Backoff(base, maxDelay, 3)] = true
	}
	require.Greater(t, len(seen), 1)
	require.LessOrEqual(t, store.Backoff(time.Second, 300*time.Millisecond, 1), 300*time.Millisecond, "a base above max is capped too")
}

func TestOpenCreatesMissingDatabase(t *testing.T) {
	t.Parallel()
	testdb.Require(t) // no PostgreSQL: fail saying how to provide one
	name := fmt.Sprintf("lwtest_create_%08x", rand.Uint32())
	dbURL := connstr.WithParam(testdb.URL(), "dbname", name)
	t.Cleanup(func() {
		admin, err := pgx.Connect(context.Background(), testdb.URL())
		if err != nil {
			t.Errorf("dropping database %s: %v", name, err)
			return
		}
		defer admin.Close(context.Background())
		if _, err := admin.Exec(context.Background(), `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})

	st, err := store.Open(context.Background(), store.Config{URL: dbURL, MaxConns: 2})
	require.NoError(t, err)
	var current string
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT current_database()`).Scan(&current))
	require.Equal(t, name, current)
	require.NoError(t, st.Migrate(context.Background()))
	st.Close()

	// It exists now: opening again just connects.
	st, err = store.Open(context.Background(), store.Config{URL: dbURL, MaxConns: 2})
	require.NoError(t, err)
	var n int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks`).Scan(&n))
	st.Close()
}

func TestOpenErrorsDoNotShowPassword(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-Pa55word"
	for _, u := range []string{
		"postgres://lwuser:" + secret + "@127.0.0.1:notaport/db",
		"postgres://lwuser:" + secret + "@127.0.0.1:5432/db?sslmode=bogus",
		"postgres://lwuser:" + secret + "@127.0.0.1:5432/db?sslrootcert=/nonexistent/root.crt",
		"postgres://lwuser:" + secret + "@127.0.0.1:5432/db?sslcert=/nonexistent/c.crt&sslkey=/nonexistent/c.key",
		"postgres://lwuser:" + secret + "@[::1/db",
		"host=127.0.0.1 port=1 user=lwuser password=" + secret + " dbname=db connect_timeout=2 sslmode=disable",
		"postgres://lwuser:" + secret + "@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := store.Open(ctx, store.Config{URL: u})
		cancel()
		require.Error(t, err, u)
		require.Nil(t, st)
		require.NotContains(t, err.Error(), secret, u)
		require.NotContains(t, fmt.Sprintf("%+v", err), secret, u)
	}
}

// A topic's ID is recorded on first sight; another ID means the topic was
// created again, and its stored offsets and the outcomes of request_ids
// generated from its records (not another topic's, nor a requester's own
// ids) are forgotten.
func TestCheckTopicID(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	const group, topic = "lockworker", "locks.commands"
	_, err := st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES
		($1, $2, 3, 7), ($1, 'other', 3, 9)`, group, topic)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO processed_requests (request_id, outcome) VALUES
		('locks.commands/3/6', '{}'), ('other/3/8', '{}'), ('r-1', '{}'), ('locks.commandsX/1/1', '{}')`)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO locks (namespace, lock_name, status, source_partition) VALUES ('', 'w', 'released', 3);
		INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition) VALUES
		('', 'w', 'a', 'locks.commands/3/5', 30, now() + interval '1 hour', 3),
		('', 'w', 'b', 'r-2', 30, now() + interval '1 hour', 3)`)
	require.NoError(t, err)
	ids := func(sql string) func() []string {
		return func() []string {
			rows, err := st.Pool.Query(ctx, sql)
			require.NoError(t, err)
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			return ids
		}
	}
	waiters := ids(`SELECT request_id FROM lock_waiters ORDER BY owner_id`)
	requests := ids(`SELECT request_id FROM processed_requests ORDER BY request_id`)
	for _, id := range []string{"id-1", "id-1"} {
		recreated, _, err := st.CheckTopicID(ctx, group, topic, id)
		require.NoError(t, err)
		require.False(t, recreated)
	}
	require.Len(t, offsets(t, st, group, topic), 1)
	require.Len(t, requests(), 4)
	recreated, was, err := st.CheckTopicID(ctx, group, topic, "id-2")
	require.NoError(t, err)
	require.True(t, recreated)
	require.Equal(t, "id-1", was)
	require.Empty(t, offsets(t, st, group, topic))
	require.Len(t, offsets(t, st, group, "other"), 1)
	require.Equal(t, []string{"locks.commandsX/1/1", "other/3/8", "r-1"}, requests())
	require.Equal(t, []string{"locks.commands/3/5@id-1", "r-2"}, waiters(), "a wait's later answer is stored under no id the new topic gives")
	recreated, _, err = st.CheckTopicID(ctx, group, topic, "id-2")
	require.NoError(t, err)
	require.False(t, recreated)
}

// CheckTopicID locks a recreated topic's offset rows in partition order,
// as a batch does, before it deletes them: the DELETE alone takes them in
// its scan's order, a seq scan's (the table is small and analyzed often)
// the heap's, which updates reshuffle. Here the heap holds partition 1's
// row before 0's: a batch holding 0 and then locking 1 would deadlock with
// it (40P01 after deadlock_timeout, one side retried).
func TestCheckTopicIDLocksOffsetsInPartitionOrder(t *testing.T) {
	t.Parallel()
	var retries atomic.Int32
	st := testdb.NewWith(t, store.Config{LockTimeout: -1, OnRetry: func(_ int, err error, _ time.Duration) {
		retries.Add(1)
		t.Logf("CheckTopicID retried: %v", err)
	}})
	ctx := t.Context()
	const group, topic = "lockworker", "locks.commands"
	_, _, err := st.CheckTopicID(ctx, group, topic, "id-1")
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ($1, $2, 0, 5), ($1, $2, 1, 5)`,
		group, topic)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 7 WHERE partition = 0; ANALYZE consumer_offsets`)
	require.NoError(t, err)
	rows, err := st.Pool.Query(ctx, `SELECT partition FROM consumer_offsets WHERE group_id = $1 AND topic = $2`, group, topic)
	require.NoError(t, err)
	order, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	require.NoError(t, err)
	require.Equal(t, []int32{1, 0}, order, "the scan's order")

	batch, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = batch.Rollback(context.Background()) }()
	var pid int64
	require.NoError(t, batch.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = store.LockOffset(ctx, batch, group, topic, 0)
	require.NoError(t, err)
	type checked struct {
		recreated bool
		err       error
	}
	done := make(chan checked, 1)
	go func() {
		recreated, _, err := st.CheckTopicID(ctx, group, topic, "id-2")
		done <- checked{recreated, err}
	}()
	require.Eventually(t, func() bool {
		var n int
		err := st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid).Scan(&n)
		return err == nil && n > 0
	}, 10*time.Second, 5*time.Millisecond, "CheckTopicID waits for the batch")

	_, err = store.LockOffset(ctx, batch, group, topic, 1)
	require.NoError(t, err, "the batch's second offset row: no deadlock")
	require.NoError(t, batch.Commit(ctx))
	got := <-done
	require.NoError(t, got.err)
	require.True(t, got.recreated)
	require.Zero(t, retries.Load(), "CheckTopicID: no deadlock")
	require.Empty(t, offsets(t, st, group, topic))
}

// An ID the topic had before its current one, read again from a broker
// behind the topic's deletion (old, new, old), is no new recreation: the
// live topic's offsets and generated outcomes stay, the new ID stays
// stored, and the caller is told to read it again (ErrRetiredTopicID).
// Only the last RetiredTopicIDsKept IDs replaced are kept.
func TestCheckTopicIDRefusesARetiredID(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	const group, topic = "lockworker", "locks.commands"
	check := func(id string) (bool, error) {
		t.Helper()
		recreated, _, err := st.CheckTopicID(ctx, group, topic, id)
		return recreated, err
	}
	_, err := check("old")
	require.NoError(t, err)
	recreated, err := check("new")
	require.NoError(t, err)
	require.True(t, recreated)
	// The new topic applied up to 500 on partition 0.
	_, err = st.Pool.Exec(ctx, `INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ($1, $2, 0, 500)`, group, topic)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `INSERT INTO processed_requests (request_id, outcome) VALUES ('locks.commands/0/499', '{}')`)
	require.NoError(t, err)

	recreated, err = check("old")
	require.ErrorIs(t, err, store.ErrRetiredTopicID)
	require.False(t, recreated)
	retired, ok := errors.AsType[*store.RetiredTopicIDError](err)
	require.True(t, ok)
	require.Equal(t, store.RetiredTopicIDError{Topic: topic, ID: "old", Current: "new"}, *retired)
	require.NotErrorIs(t, err, store.ErrTransient, "no retry of the transaction cures it: the ID is read again")
	require.Equal(t, map[int32]store.Position{0: {Next: 500, Epoch: -1}}, offsets(t, st, group, topic))
	var outcomes int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE request_id = 'locks.commands/0/499'`).Scan(&outcomes))
	require.Equal(t, 1, outcomes)
	recreated, err = check("new")
	require.NoError(t, err)
	require.False(t, recreated, "the new ID stayed stored")

	// Recreated many times over: the oldest IDs are forgotten.
	for i := range store.RetiredTopicIDsKept {
		_, err = check(fmt.Sprintf("later-%d", i))
		require.NoError(t, err)
	}
	_, err = check("new") // the first one replaced since
	require.ErrorIs(t, err, store.ErrRetiredTopicID)
	recreated, err = check("old") // replaced RetiredTopicIDsKept+1 IDs ago
	require.NoError(t, err)
	require.True(t, recreated)
	var kept int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT cardinality(retired_ids) FROM consumer_topics WHERE group_id = $1 AND topic = $2`,
		group, topic).Scan(&kept))
	require.Equal(t, store.RetiredTopicIDsKept, kept)
}

func offsets(t *testing.T, st *store.Store, group, topic string) map[int32]store.Position {
	t.Helper()
	o, err := st.Offsets(context.Background(), group, topic)
	require.NoError(t, err)
	return o
}

func TestOffsets(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	const group, topic = "lockworker", "locks.commands"

	inTx := func(fn func(tx pgx.Tx) error) error { return st.InTx(ctx, fn) }
	var next int64
	require.NoError(t, inTx(func(tx pgx.Tx) (err error) {
		next, err = store.LockOffset(ctx, tx, group, topic, 3)
		return err
	}))
	require.Equal(t, int64(-1), next, "never applied")
	offsets, err := st.Offsets(ctx, group, topic)
	require.NoError(t, err)
	require.Empty(t, offsets, "-1 is not an offset")

	require.NoError(t, inTx(func(tx pgx.Tx) error {
		if _, err := store.LockOffset(ctx, tx, group, topic, 3); err != nil {
			return err
		}
		return advanceOffset(ctx, tx, group, topic, 3, -1, 10)
	}))
	offsets, err = st.Offsets(ctx, group, topic)
	require.NoError(t, err)
	require.Equal(t, map[int32]store.Position{3: {Next: 10, Epoch: 7}}, offsets)

	// A worker that expects an older offset may not commit.
	err = inTx(func(tx pgx.Tx) error { return advanceOffset(ctx, tx, group, topic, 3, 7, 12) })
	require.ErrorIs(t, err, store.ErrOffsetMoved)
	require.NotErrorIs(t, err, store.ErrTransient)

	// A rewind (the Kafka log lost records) moves only from the offset the
	// caller expects, and only back.
	moved, err := st.RewindOffset(ctx, group, topic, 3, 12, 4, 3)
	require.NoError(t, err)
	require.False(t, moved, "another replica's offset")
	moved, err = st.RewindOffset(ctx, group, topic, 3, 10, 12, 3)
	require.NoError(t, err)
	require.False(t, moved, "never forward")
	moved, err = st.RewindOffset(ctx, group, topic, 3, 10, 4, 3)
	require.NoError(t, err)
	require.True(t, moved)
	offsets, err = st.Offsets(ctx, group, topic)
	require.NoError(t, err)
	require.Equal(t, map[int32]store.Position{3: {Next: 4, Epoch: 3}}, offsets)
	require.NoError(t, inTx(func(tx pgx.Tx) error { return advanceOffset(ctx, tx, group, topic, 3, 4, 10) }))
	// A worker of an earlier version moves the offset without the epoch:
	// the epoch left behind is not read as the new offset's.
	_, err = st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 11 WHERE group_id = $1 AND partition = 3`, group)
	require.NoError(t, err)
	offsets, err = st.Offsets(ctx, group, topic)
	require.NoError(t, err)
	require.Equal(t, map[int32]store.Position{3: {Next: 11, Epoch: -1}}, offsets)
	_, err = st.Pool.Exec(ctx, `UPDATE consumer_offsets SET next_offset = 10 WHERE group_id = $1 AND partition = 3`, group)
	require.NoError(t, err)
	offsets, err = st.Offsets(ctx, "other-group", topic)
	require.NoError(t, err)
	require.Empty(t, offsets)

	// LockOffset serializes the partition's transactions.
	tx1, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx1.Rollback(ctx)
	_, err = store.LockOffset(ctx, tx1, group, topic, 3)
	require.NoError(t, err)
	got := make(chan int64, 1)
	go func() {
		_ = inTx(func(tx pgx.Tx) error {
			n, err := store.LockOffset(ctx, tx, group, topic, 3)
			if err == nil {
				got <- n
			}
			return err
		})
	}()
	var holder int
	require.NoError(t, tx1.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&holder))
	require.Eventually(t, func() bool {
		var blocked bool
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid)))`,
			holder).Scan(&blocked))
		return blocked
	}, 10*time.Second, 5*time.Millisecond, "the second transaction waits for the first")
	select {
	case n := <-got:
		t.Fatalf("second transaction locked the offset row while the first held it (read %d)", n)
	default:
	}
	require.NoError(t, advanceOffset(ctx, tx1, group, topic, 3, 10, 11))
	require.NoError(t, tx1.Commit(ctx))
	require.Equal(t, int64(11), <-got, "the waiting transaction reads the committed offset")
}

func TestPrune(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO processed_requests (request_id, outcome, processed_at) VALUES
			('old-1', '{}', now() - interval '2 days'), ('old-2', '{}', now() - interval '3 days'), ('new', '{}', now()),
			('queued', '{}', now() - interval '4 days');
		INSERT INTO locks (namespace, lock_name, status, source_partition) VALUES ('', 'q', 'acquired', 0);
		INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition)
			VALUES ('', 'q', 'w', 'queued', 30, now() + interval '1 hour', 0);
		INSERT INTO lock_events (event_id, namespace, lock_name, type, owner_id, fencing_token, occurred_at) VALUES
			(gen_random_uuid(), '', 'a', 'lock.acquired', 'o', 1, now() - interval '8 days'),
			(gen_random_uuid(), '', 'a', 'lock.released', 'o', 1, now() - interval '1 day')`)
	require.NoError(t, err)
	// Another replica pruning (holding the prune lock): this one deletes
	// nothing, and does not wait.
	hold, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = hold.Rollback(ctx) }() // also when the test fails first
	_, err = hold.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, store.PruneLockClass)
	require.NoError(t, err)
	n, err := st.Prune(ctx, 24*time.Hour, 7*24*time.Hour, 1)
	require.NoError(t, err)
	require.Zero(t, n, "another replica prunes")
	require.NoError(t, hold.Rollback(ctx))

	n, err = st.Prune(ctx, 24*time.Hour, 7*24*time.Hour, 1)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "at most limit rows of each")
	var oldest int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE request_id = 'old-2'`).Scan(&oldest))
	require.Zero(t, oldest, "the oldest first")
	n, err = st.Prune(ctx, 24*time.Hour, 7*24*time.Hour, 100)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	var left string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT (SELECT string_agg(request_id, ',' ORDER BY request_id) FROM processed_requests) || ' ' || (SELECT string_agg(type, ',') FROM lock_events)`).Scan(&left))
	require.Equal(t, "new,queued lock.released", left, "the outcome of an acquire still queued is kept")

	// A retention of 0 (LOCK_EVENTS_RETENTION=0: no history) prunes the
	// whole history left from before.
	n, err = st.Prune(ctx, 24*time.Hour, 0, 100)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
}

// migratedTo opens a fresh schema migrated up to version, for the rows a
// test writes in an older schema before Migrate takes it further.
func migratedTo(t *testing.T, version int32) *store.Store {
	t.Helper()
	ctx := context.Background()
	st := testdb.NewSchema(t).Open(t, store.Config{})
	conn, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	// tern's lock is one for the whole database: other tests' migrations
	// may hold it longer than the pool's lock_timeout.
	_, err = conn.Exec(ctx, "SET lock_timeout = 0")
	require.NoError(t, err)
	m, err := migrate.NewMigrator(ctx, conn.Conn(), store.VersionTable)
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(migrations.FS))
	require.NoError(t, m.MigrateTo(ctx, version))
	return st
}

// TestMigrateKeepsUnpublishedHeaders: outbox rows written before migration
// 002 (headers as jsonb, values base64) keep their headers, binary values
// included, in the bytea form the relay reads.
func TestMigrateKeepsUnpublishedHeaders(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := migratedTo(t, 1)
	_, err := st.Pool.Exec(ctx, `INSERT INTO outbox (source_partition, topic, key, value, headers) VALUES
		(0, 't', 'k', 'v1', '[{"k":"ce_id","v":"MDE5Mw=="},{"k":"bin","v":"AP8KgA=="},{"k":"empty","v":null}]'),
		(0, 't', 'k', 'v2', '[]')`)
	require.NoError(t, err)

	require.NoError(t, st.Migrate(ctx))
	rows, err := st.Pool.Query(ctx, `SELECT headers FROM outbox ORDER BY id`)
	require.NoError(t, err)
	raws, err := pgx.CollectRows(rows, pgx.RowTo[[]byte])
	require.NoError(t, err)
	require.Len(t, raws, 2)
	hs, err := topics.DecodeHeaders(raws[0])
	require.NoError(t, err)
	require.Equal(t, []topics.Header{{Key: "ce_id", Value: []byte("0193")}, {Key: "bin", Value: []byte{0, 0xff, '\n', 0x80}}, {Key: "empty", Value: []byte{}}}, hs)
	hs, err = topics.DecodeHeaders(raws[1])
	require.NoError(t, err)
	require.Empty(t, hs)
}

// TestMigrateKeepsLeasesAndWaiters: migration 008 moves every lease in
// force into lock_holders as it was (owner, token, times, metadata, counts,
// reply_to, request, partition), keeps the lease that ended last of a
// released lock and every waiter's place (in exclusive mode).
func TestMigrateKeepsLeasesAndWaiters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := migratedTo(t, 7)
	_, err := st.Pool.Exec(ctx, `
		INSERT INTO locks (namespace, lock_name, status, owner_id, fencing_token, acquired_at, expires_at, lease_duration, owner_metadata,
			acquisition_count, extension_count, reply_to, holder_request_id, waiter_count, source_partition) VALUES
			('ns', 'held', 'acquired', 'alice', 17, '2026-01-01 00:00:00Z', '2026-01-01 00:01:00Z', 60, '{"k": 1}', 3, 2,
				'locks.replies.alice', 'r-1', 1, 5),
			('ns', 'done', 'released', 'bob', 12, '2026-01-01 00:00:00Z', '2026-01-01 00:00:30Z', 30, NULL, 1, 0, 'locks.replies.bob', 'r-0', 0, 2);
		INSERT INTO lock_waiters (namespace, lock_name, owner_id, request_id, lease_duration, deadline, source_partition)
			VALUES ('ns', 'held', 'carol', 'r-2', 30, '2026-01-01 00:02:00Z', 6)`)
	require.NoError(t, err)

	require.NoError(t, st.Migrate(ctx))
	var holder string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT concat_ws(' ', lock_name, owner_id, mode, fencing_token, acquired_at = '2026-01-01 00:00:00Z',
		expires_at = '2026-01-01 00:01:00Z', lease_duration, owner_metadata, extension_count, reply_to, request_id, source_partition)
		FROM lock_holders`).Scan(&holder))
	require.Equal(t, `held alice exclusive 17 t t 60 {"k": 1} 2 locks.replies.alice r-1 5`, holder)
	rows, err := st.Pool.Query(ctx, `SELECT concat_ws(' ', lock_name, status, lock_limit, holder_count, shared_count, waiter_count, acquisition_count,
		coalesce(ended_owner_id, '-'), coalesce(ended_mode, '-'), coalesce(ended_fencing_token, 0)) FROM locks ORDER BY lock_name`)
	require.NoError(t, err)
	locks, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Equal(t, []string{"done released 1 0 0 0 1 bob exclusive 12", "held acquired 1 1 0 1 3 - - 0"}, locks)
	var waiter string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT owner_id || ' ' || mode FROM lock_waiters`).Scan(&waiter))
	require.Equal(t, "carol exclusive", waiter)
}

// advanceOffset sends store.QueueAdvanceOffset on its own.
func advanceOffset(ctx context.Context, tx pgx.Tx, group, topic string, partition int32, from, to int64) error {
	b := &pgx.Batch{}
	store.QueueAdvanceOffset(b, group, topic, partition, from, to, 7)
	return tx.SendBatch(ctx, b).Close()
}

// Connections plan each prepared statement once and compile no plan (see
// sessionSettings), unless the connection string says otherwise: a generic
// plan's cost counts work its CASE skips, and above jit_above_cost every
// run would compile, for many times as long as the statement takes.
func TestOpenSetsPlanning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, c := range []struct{ setting, ours, theirs string }{
		{"plan_cache_mode", "force_generic_plan", "auto"},
		{"jit", "off", "on"},
	} {
		t.Run(c.setting, func(t *testing.T) {
			t.Parallel()
			sc := testdb.NewSchema(t)
			show := func(st *store.Store) string {
				var v string
				require.NoError(t, st.Pool.QueryRow(ctx, `SHOW `+c.setting).Scan(&v))
				return v
			}
			st := sc.Open(t, store.Config{MaxConns: 1})
			require.Equal(t, c.ours, show(st))
			require.NoError(t, st.Migrate(ctx))
			require.Equal(t, c.ours, show(st), "also after the migrations (tern resets their connection)")
			sc.URL = connstr.WithParam(sc.URL, c.setting, c.theirs)
			require.Equal(t, c.theirs, show(sc.Open(t, store.Config{})))
		})
	}
}

// A migration that fails after others were applied (each ending in tern's
// RESET ALL) leaves no connection planning under plan_cache_mode auto in
// the pool: the one the migrator ran on is closed, not released, so
// neither a retry that finds the schema complete nor a transaction takes
// it.
func TestFailedMigrateLeavesConnectionsSetUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := testdb.NewSchema(t).Open(t, store.Config{MaxConns: 1})
	// 011_sessions.sql creates it: the ten before it are applied.
	_, err := st.Pool.Exec(ctx, `CREATE TABLE sessions (id int)`)
	require.NoError(t, err)
	err = st.Migrate(ctx)
	requireClass(t, err, nil, "42P07") // duplicate table
	var version int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT version FROM `+store.VersionTable).Scan(&version))
	require.Equal(t, 10, version, "the migrations before it applied")
	var mode string
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW plan_cache_mode`).Scan(&mode))
	require.Equal(t, "force_generic_plan", mode)
}

// POSTGRES_MIN_CONNECTIONS reaches the pool as set, 0 (keep no idle
// connection) included.
func TestOpenKeepsMinConnsAsConfigured(t *testing.T) {
	t.Parallel()
	sc := testdb.NewSchema(t)
	for _, v := range []string{"0", "2"} {
		cfg, err := config.FromEnv(func(k string) string {
			if k == "POSTGRES_MIN_CONNECTIONS" {
				return v
			}
			return ""
		})
		require.NoError(t, err)
		st := sc.Open(t, store.Config{MinConns: cfg.Postgres.MinConns, MaxConns: cfg.Postgres.MaxConns})
		require.Equal(t, cfg.Postgres.MinConns, st.Pool.Config().MinConns, "POSTGRES_MIN_CONNECTIONS=%s", v)
	}
}

// A schema at the last migration is not migrated again, so it does not wait
// for tern's advisory lock, one for the whole database, which another
// schema's migration may hold for long.
func TestMigrateUpToDateTakesNoLock(t *testing.T) {
	st := testdb.New(t) // migrated
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.NewSchema(t).URL)
	require.NoError(t, err)
	defer conn.Close(ctx)
	// tern's lock (its migrate.go): held while this test's Migrate runs.
	_, err = conn.Exec(ctx, `SELECT pg_advisory_lock(9628173550095224)`)
	require.NoError(t, err)
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(9628173550095224)`) //nolint:errcheck
	mctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	require.NoError(t, st.Migrate(mctx), "Migrate waited for the lock")
	requireSchema(t, st)
}

// A transaction whose connection stops answering while fn fails (the
// server's host gone without a reset) returns fn's error once the rollback
// gives up at RollbackTimeout, instead of waiting on the connection for
// ever: the rollback runs even when ctx is done, so ctx cannot end it.
func TestRollbackOfAHungConnectionIsBounded(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	st := sch.Open(t, store.Config{MaxConns: 1})
	t.Cleanup(proxy.Restore) // before the store closes (cleanups run last first)
	failed := errors.New("fn failed")
	done := make(chan error, 1)
	go func() {
		done <- st.InTx(context.Background(), func(tx pgx.Tx) error {
			if _, err := tx.Exec(context.Background(), `SELECT 1`); err != nil {
				return err
			}
			proxy.Hang()
			return failed
		})
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, failed)
	case <-time.After(store.RollbackTimeout + 20*time.Second):
		t.Fatal("InTx still waits on the rollback of a connection that does not answer")
	}
}

// startRetries records the retries of Open and Migrate under RetryStart
// (config), or any retries it is told of (record).
type startRetries struct {
	mu   sync.Mutex
	errs []error
	// retried says each retry, if not full; a wait drains it first.
	retried chan struct{}
}

func newStartRetries() *startRetries { return &startRetries{retried: make(chan struct{}, 1)} }

// config is a store.Config for url that retries its start, recorded on r,
// quickly.
func (r *startRetries) config(url string) store.Config {
	return store.Config{URL: url, MaxConns: 2, RetryStart: true, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		OnStartRetry: r.record,
		OnRetry: func(_ int, err error, _ time.Duration) {
			panic(fmt.Sprintf("a start's retry told as a transaction's: %v", err))
		},
	}
}

// record fits store.Config's OnStartRetry and OnRetry.
func (r *startRetries) record(_ int, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, err)
	select {
	case r.retried <- struct{}{}:
	default:
	}
}

func (r *startRetries) all() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// awaitRetry waits for a retry, failing the test if done (the call under
// test) says it returned first, or it takes too long.
func (r *startRetries) awaitRetry(t *testing.T, done <-chan error) {
	t.Helper()
	select {
	case <-r.retried:
	case err := <-done:
		t.Fatalf("returned without retrying: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no retry in 30 s")
	}
}

// awaitDone waits for done's error once PostgreSQL is back.
func awaitDone(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("still retrying 30 s after PostgreSQL came back")
		return nil
	}
}

// With RetryStart, Open and Migrate wait for a PostgreSQL that refuses
// them (a failover, say), retrying with the backoff and telling
// OnStartRetry, and go on when it is back.
func TestRetryStartWaitsForPostgres(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	r := newStartRetries()

	proxy.Cut()
	opened := make(chan error, 1)
	var st *store.Store
	go func() {
		var err error
		st, err = store.Open(context.Background(), r.config(sch.URL))
		opened <- err
	}()
	r.awaitRetry(t, opened)
	proxy.Restore()
	require.NoError(t, awaitDone(t, opened))
	t.Cleanup(st.Close)
	t.Cleanup(proxy.Restore) // before the store closes (cleanups run last first)
	opening := r.all()
	require.NotEmpty(t, opening)
	for _, err := range opening {
		require.ErrorIs(t, err, store.ErrTransient)
		require.Contains(t, err.Error(), "connecting to PostgreSQL at 127.0.0.1", "says where it connects")
	}

	proxy.Cut()
	migrated := make(chan error, 1)
	go func() { migrated <- st.Migrate(context.Background()) }()
	select { // left from Open's retries, if any: Migrate's go on until it is back
	case <-r.retried:
	default:
	}
	r.awaitRetry(t, migrated)
	proxy.Restore()
	require.NoError(t, awaitDone(t, migrated))
	requireSchema(t, st)
	migrating := r.all()[len(opening):]
	require.NotEmpty(t, migrating)
	for _, err := range migrating {
		require.ErrorIs(t, err, store.ErrTransient)
		require.Contains(t, err.Error(), "migrating")
	}
}

// With RetryStart, what no retry cures still fails at once: a role that
// may not log in or does not exist, a missing database it may not create,
// an invalid URL, a server certificate that does not verify.
func TestRetryStartFailsAtOnce(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	open := func(t *testing.T, url string) error {
		t.Helper()
		r := newStartRetries()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second) // retrying would end here
		defer cancel()
		st, err := store.Open(ctx, r.config(url))
		if err == nil {
			st.Close()
		}
		require.Error(t, err)
		require.NoError(t, ctx.Err(), "retried until ctx ended")
		require.NotErrorIs(t, err, store.ErrTransient)
		require.Empty(t, r.all(), "no retry")
		return err
	}
	database := st.Pool.Config().ConnConfig.Database

	t.Run("a role that may not log in", func(t *testing.T) {
		err := open(t, urlAs(t, newRole(t, st, false), database))
		requireClass(t, err, store.ErrAccessDenied, "28000")
	})
	t.Run("no such role", func(t *testing.T) {
		err := open(t, urlAs(t, fmt.Sprintf("lwtest_nobody_%08x", rand.Uint32()), database))
		requireClass(t, err, store.ErrAccessDenied, "28000")
	})
	t.Run("missing database the role may not create", func(t *testing.T) {
		err := open(t, urlAs(t, newRole(t, st, true), fmt.Sprintf("lwtest_nocreate_%08x", rand.Uint32())))
		require.ErrorIs(t, err, store.ErrNoDatabase)
		require.ErrorIs(t, err, store.ErrAccessDenied)
	})
	t.Run("an invalid URL", func(t *testing.T) {
		err := open(t, "postgres://lwuser@127.0.0.1:5432/db?sslmode=bogus")
		require.ErrorIs(t, err, store.ErrConnString)
		require.ErrorContains(t, err, "invalid format")
	})
	t.Run("an sslrootcert that cannot be read", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "root.crt")
		err := open(t, "postgres://lwuser:s3cr3t@127.0.0.1:5432/db?sslmode=verify-full&sslrootcert="+url.QueryEscape(missing))
		require.ErrorIs(t, err, store.ErrConnString)
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorContains(t, err, "unable to read CA file: open "+missing)
		require.NotContains(t, err.Error(), "invalid format")
		require.NotContains(t, err.Error(), "s3cr3t")
	})
	t.Run("a server certificate that does not verify", func(t *testing.T) {
		addr := untrustedTLSServer(t)
		err := open(t, "postgres://lwuser@"+addr+"/db?sslmode=verify-full&connect_timeout=5")
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, err, &unknown)
	})
	t.Run("a server without TLS when sslmode requires it", func(t *testing.T) {
		err := open(t, "postgres://lwuser@"+refusingTLSServer(t)+"/db?sslmode=require&connect_timeout=5")
		require.ErrorContains(t, err, "server refused TLS connection")
	})
	t.Run("a TLS alert from the server", func(t *testing.T) {
		addr := tlsServer(t, tls.RequireAnyClientCert) // and the client has none
		err := open(t, "postgres://lwuser@"+addr+"/db?sslmode=require&connect_timeout=5")
		require.ErrorContains(t, err, "remote error: tls")
	})
	t.Run("channel_binding=require and a server offering only SCRAM-SHA-256", func(t *testing.T) {
		err := open(t, "postgres://lwuser:pw@"+saslServer(t)+"/db?sslmode=disable&channel_binding=require&connect_timeout=5")
		require.ErrorContains(t, err, "failed SASL auth: channel binding required but server does not support SCRAM-SHA-256-PLUS")
	})
	t.Run("every attempt of sslmode prefer a setup error", func(t *testing.T) {
		// The TLS attempt refused, the one without TLS short of channel binding.
		err := open(t, "postgres://lwuser:pw@"+saslServer(t)+"/db?sslmode=prefer&channel_binding=require&connect_timeout=5")
		require.ErrorContains(t, err, "server refused TLS connection")
		require.ErrorContains(t, err, "channel binding required but")
	})
}

// With RetryStart, a connection of which one attempt failed for a reason
// a wait may cure is retried though another failed for one it does not:
// one host not answering beside one refusing the TLS sslmode requires;
// under sslmode prefer, the TLS attempt refused and the one without TLS
// closed by the server.
func TestRetryStartRetriesWhenAnAttemptMayRecover(t *testing.T) {
	t.Parallel()
	for name, url := range map[string]string{
		"two hosts":      "postgres://lwuser@" + silentServer(t) + "," + refusingTLSServer(t) + "/db?sslmode=require&connect_timeout=1",
		"sslmode prefer": "postgres://lwuser@" + closingServer(t) + "/db?sslmode=prefer&connect_timeout=5",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newStartRetries()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			opened := make(chan error, 1)
			go func() {
				st, err := store.Open(ctx, r.config(url))
				if err == nil {
					st.Close()
				}
				opened <- err
			}()
			r.awaitRetry(t, opened)
			cancel()
			require.Error(t, awaitDone(t, opened))
			err := r.all()[0]
			require.ErrorIs(t, err, store.ErrTransient)
			require.ErrorContains(t, err, "server refused TLS connection", "the setup error's attempt told too")
		})
	}
}

// At run time a server certificate that does not verify is transient, as
// any failed connection is: a transaction, or the worker resuming,
// retries in place. Only a start (RetryStart) fails at once on it.
func TestBadCertificateTransientAtRunTime(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, "postgres://lwuser@"+untrustedTLSServer(t)+"/db?sslmode=verify-full")
	var unknown x509.UnknownAuthorityError
	require.ErrorAs(t, err, &unknown)
	require.True(t, store.RunTimeTransient(err))
	require.False(t, store.StartRetryable(ctx, err))
}

// What a start retries and what it fails at once, error by error: each
// is the *pgconn.ConnectError pgconn makes of its attempts, which a start
// retries unless every attempt failed for a reason no wait cures.
func TestStartRetryable(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	tlsAlert := &net.OpError{Op: "remote error", Err: errors.New("tls: certificate required")}
	for name, err := range map[string]error{
		"refused":         connectError(t, refused),
		"reset":           connectError(t, reset),
		"EOF":             connectError(t, io.EOF),
		"EOF during SASL": connectError(t, fmt.Errorf("failed SASL auth: %w", io.EOF)),
		// A Service not created yet, or a misspelt host: retried alike.
		"no such host":         connectError(t, &net.DNSError{Err: "no such host", Name: "postgres-rw", IsNotFound: true}),
		"starting up":          connectError(t, &pgconn.PgError{Code: "57P03"}),
		"too many connections": connectError(t, &pgconn.PgError{Code: "53300"}),
		// Not recognised: fails toward waiting.
		"GSS":                      connectError(t, fmt.Errorf("failed GSS auth: %w", errors.New("GSSAPI negotiation failed"))),
		"protocol version too low": connectError(t, errors.New("server protocol version too low")),
		// One attempt a wait may cure beside setup errors.
		"one host down, another refusing the role":                       connectError(t, refused, &pgconn.PgError{Code: "28000"}),
		"sslmode prefer: TLS reset, plain text refused by hostssl":       connectError(t, reset, &pgconn.PgError{Code: "28000"}),
		"sslmode allow: plain text refused by hostssl, TLS reset":        connectError(t, &pgconn.PgError{Code: "28000"}, reset),
		"a certificate that does not verify beside a server starting up": connectError(t, &pgconn.PgError{Code: "57P03"}, x509.CertificateInvalidError{}),
	} {
		assert.True(t, store.StartRetryable(context.Background(), err), "%s: %v", name, err)
	}
	for name, err := range map[string]error{
		"wrong password":           connectError(t, &pgconn.PgError{Code: "28P01"}),
		"role refused":             connectError(t, &pgconn.PgError{Code: "28000"}),
		"no database":              connectError(t, &pgconn.PgError{Code: "3D000"}),
		"no CONNECT grant":         connectError(t, &pgconn.PgError{Code: "42501"}),
		"TLS alert":                connectError(t, tlsAlert),
		"untrusted certificate":    connectError(t, x509.UnknownAuthorityError{}),
		"wrong host name":          connectError(t, &tls.CertificateVerificationError{Err: x509.HostnameError{Certificate: &x509.Certificate{}, Host: "postgres-rw"}}),
		"TLS refused":              connectError(t, errors.New("server refused TLS connection")),
		"sslcertmode":              connectError(t, fmt.Errorf("sslcertmode check failed: %w", errors.New("server did not request an SSL certificate"))),
		"require_auth":             connectError(t, fmt.Errorf("require_auth check failed: %w", errors.New("server requested a password"))),
		"channel binding check":    connectError(t, fmt.Errorf("channel binding check failed: %w", errors.New("channel binding required but server did not authenticate using channel binding"))),
		"channel binding in SCRAM": connectError(t, fmt.Errorf("failed SASL auth: %w", errors.New("channel binding required but server does not support SCRAM-SHA-256-PLUS"))),
		// Every attempt a setup error.
		"two hosts refusing the role":                   connectError(t, &pgconn.PgError{Code: "28000"}, &pgconn.PgError{Code: "28000"}),
		"sslmode prefer: TLS alert, plain text refused": connectError(t, tlsAlert, &pgconn.PgError{Code: "28000"}),
		"a certificate and a role":                      connectError(t, x509.CertificateInvalidError{}, &pgconn.PgError{Code: "28P01"}),
	} {
		var connectErr *pgconn.ConnectError
		require.ErrorAs(t, err, &connectErr, "%s: judged by its attempts", name)
		assert.False(t, store.StartRetryable(context.Background(), err), "%s: %v", name, err)
	}
	// Outside a connection: CREATE DATABASE refused.
	assert.False(t, store.StartRetryable(context.Background(), &pgconn.PgError{Code: "42501"}))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, store.StartRetryable(ctx, connectError(t, refused)), "the caller's ctx done: not retried")
	// A signal that lands while an attempt fails for its own reason ends
	// the start as the signal's (lockworker exits 0), not as the attempt's
	// failure; a failure no retry cures stays what it is.
	err := store.TranslateStart(ctx, connectError(t, refused))
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "connection refused")
	err = store.TranslateStart(ctx, connectError(t, &pgconn.PgError{Code: "28P01"}))
	require.NotErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, err, store.ErrAccessDenied)
}

// connectError is the error of a pgconn connection to as many hosts as
// errs of which the attempts fail with errs in turn (each as a dial's).
func connectError(t *testing.T, errs ...error) error {
	t.Helper()
	hosts := make([]string, len(errs))
	for i := range hosts {
		hosts[i] = fmt.Sprintf("127.0.0.1:%d", i+1)
	}
	cfg, err := pgconn.ParseConfig("postgres://lwuser@" + strings.Join(hosts, ",") + "/db?sslmode=disable")
	require.NoError(t, err)
	attempts := 0
	cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) {
		attempts++
		return nil, errs[attempts-1]
	}
	_, err = pgconn.ConnectConfig(context.Background(), cfg)
	require.Equal(t, len(errs), attempts, "attempts made")
	var connectErr *pgconn.ConnectError
	require.ErrorAs(t, err, &connectErr)
	return err
}

// The caller's own deadline ending a start's connection is not a
// connect_timeout: Open returns at once, without a retry told.
func TestRetryStartCallersDeadline(t *testing.T) {
	t.Parallel()
	r := newStartRetries()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	st, err := store.Open(ctx, r.config("postgres://lwuser@"+silentServer(t)+"/db?sslmode=disable&connect_timeout=30"))
	if err == nil {
		st.Close()
	}
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotErrorIs(t, err, store.ErrTransient)
	require.Empty(t, r.all(), "no retry")
}

// refusingTLSServer answers PostgreSQL's SSLRequest with no, as a server
// without ssl does, until the test ends; it returns its address.
func refusingTLSServer(t *testing.T) string {
	t.Helper()
	return serve(t, func(c net.Conn) {
		if _, err := io.ReadFull(c, make([]byte, 8)); err == nil { // SSLRequest
			_, _ = c.Write([]byte("N"))
			_, _ = io.Copy(io.Discard, c)
		}
	})
}

// saslServer answers PostgreSQL's SSLRequest with no, and a startup
// message with AuthenticationSASL offering only SCRAM-SHA-256 (no
// SCRAM-SHA-256-PLUS, so no channel binding), until the test ends; it
// returns its address.
func saslServer(t *testing.T) string {
	t.Helper()
	return startupServer(t, func(c net.Conn, b *pgproto3.Backend) {
		b.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})
		if b.Flush() == nil {
			_, _ = io.Copy(io.Discard, c)
		}
	})
}

// closingServer answers PostgreSQL's SSLRequest with no and closes the
// connection on its startup message, until the test ends; it returns its
// address.
func closingServer(t *testing.T) string {
	t.Helper()
	return startupServer(t, func(net.Conn, *pgproto3.Backend) {})
}

// startupServer answers PostgreSQL's SSLRequest (and GSSEncRequest) with
// no and hands the connection that sent a startup message to answer,
// closing it after, until the test ends; it returns its address.
func startupServer(t *testing.T, answer func(net.Conn, *pgproto3.Backend)) string {
	t.Helper()
	return serve(t, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		b := pgproto3.NewBackend(c, c)
		for {
			msg, err := b.ReceiveStartupMessage()
			if err != nil {
				return
			}
			switch msg.(type) {
			case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
				if _, err := c.Write([]byte("N")); err != nil {
					return
				}
				continue
			case *pgproto3.StartupMessage:
				answer(c, b)
			}
			return
		}
	})
}

// silentServer accepts connections and never answers, until the test
// ends; it returns its address.
func silentServer(t *testing.T) string {
	t.Helper()
	return serve(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
}

// serve listens on a free local port and hands each connection to handle
// (closing it after, or when the test ends) until the test ends; it
// returns the address.
func serve(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// untrustedTLSServer answers PostgreSQL's SSLRequest with yes and then
// presents a self-signed certificate, which no client trusts, until the
// test ends; it returns its address.
func untrustedTLSServer(t *testing.T) string {
	t.Helper()
	return tlsServer(t, tls.NoClientCert)
}

// tlsServer is untrustedTLSServer asking the client for a certificate as
// clientAuth says; after the handshake, failed or not, it reads until the
// client closes.
func tlsServer(t *testing.T, clientAuth tls.ClientAuthType) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), cryptorand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "untrusted postgres"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(cryptorand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, ClientAuth: clientAuth}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, make([]byte, 8)); err != nil { // SSLRequest
					return
				}
				if _, err := c.Write([]byte("S")); err != nil {
					return
				}
				tc := tls.Server(c, cfg)
				if tc.Handshake() == nil {
					_, _ = io.Copy(io.Discard, tc)
					return
				}
				// Read what the client sent after its side of the handshake
				// (under TLS 1.3 its startup message, before it reads the
				// alert) until it closes: closing with it unread would
				// reset the connection, and the client might see the reset
				// instead of the alert.
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// A server that accepts connections and never answers them (packets
// dropped in a failover) times out at the URL's connect_timeout: a start
// (RetryStart) retries it until the server answers.
func TestRetryStartRetriesConnectTimeout(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	r := newStartRetries()
	retriesThroughHang(t, proxy, r, r.config(connstr.WithParam(sch.URL, "connect_timeout", "1")), "connect_timeout's")
}

// Without a connect_timeout in the URL, a start's connection to a server
// that accepts it and never answers ends at ConnectTimeout, is told
// as a retry, and the start goes on once the server answers; it would
// otherwise wait in its first attempt forever, untold. connect_timeout=0
// is libpq's "none" (pgx too leaves ConnectTimeout 0), and unlike a
// connect_timeout left out it also overrides PGCONNECT_TIMEOUT.
func TestRetryStartDefaultConnectTimeout(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	r := newStartRetries()
	cfg := r.config(connstr.WithParam(sch.URL, "connect_timeout", "0"))
	cfg.ConnectTimeout = 300 * time.Millisecond
	retriesThroughHang(t, proxy, r, cfg, "ConnectTimeout's")
}

// retriesThroughHang opens a store with cfg through proxy, which hangs
// every connection until the first retry is told, then forwards again:
// the open succeeds, and its first retry was a timeout (whose: why).
func retriesThroughHang(t *testing.T, proxy *tcpproxy.Proxy, r *startRetries, cfg store.Config, why string) {
	t.Helper()
	proxy.Hang()
	opened := make(chan error, 1)
	go func() {
		st, err := store.Open(context.Background(), cfg)
		if err == nil {
			st.Close()
		}
		opened <- err
	}()
	r.awaitRetry(t, opened)
	proxy.Restore()
	require.NoError(t, awaitDone(t, opened))
	require.ErrorIs(t, r.all()[0], store.ErrTransient)
	require.ErrorIs(t, r.all()[0], context.DeadlineExceeded, why)
}

// proxiedSchema is a schema of its own for the test, whose URL leads
// through a tcpproxy in front of PostgreSQL, to cut or hang.
func proxiedSchema(t *testing.T) (testdb.Schema, *tcpproxy.Proxy) {
	t.Helper()
	sch := testdb.NewSchema(t)
	proxied, proxy := testdb.Proxied(t, sch.URL)
	sch.URL = proxied
	return sch, proxy
}

// CheckGroup finds a topic's offsets stored under other groups only; the
// one whose stored offsets changed last is Others[0], with the topic ID
// stored with them (TopicID, "" when none), which the worker checks
// against the topic's current one.
func TestOffsetsOfAnotherGroup(t *testing.T) {
	t.Parallel()
	st := testdb.New(t)
	ctx := context.Background()
	const topic = "locks.commands"
	require.NoError(t, st.CheckGroup(ctx, "new", topic), "nothing stored: a new deployment")
	exec := func(sql string, args ...any) {
		t.Helper()
		_, err := st.Pool.Exec(ctx, sql, args...)
		require.NoError(t, err)
	}
	exec(`INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_at) VALUES ('old', $1, 0, 5, now() - interval '1 hour')`, topic)
	check := func(group string) *store.OtherGroupError {
		t.Helper()
		err := st.CheckGroup(ctx, group, topic)
		require.ErrorIs(t, err, store.ErrOtherGroup)
		other, ok := errors.AsType[*store.OtherGroupError](err)
		require.True(t, ok)
		return other
	}
	other := check("new")
	require.Equal(t, []string{"old"}, other.Others)
	require.Empty(t, other.TopicID, "no topic ID stored with them (before migration 013)")
	exec(`INSERT INTO consumer_topics (group_id, topic, topic_id) VALUES ('old', $1, 'id-1')`, topic)
	require.Equal(t, "id-1", check("new").TopicID)

	exec(`INSERT INTO consumer_offsets (group_id, topic, partition, next_offset) VALUES ('older-but-later', $1, 0, 3)`, topic)
	other = check("new")
	require.Equal(t, []string{"older-but-later", "old"}, other.Others, "the one whose offsets changed last first")
	require.Empty(t, other.TopicID, "TopicID is the first's")
	require.NoError(t, st.CheckGroup(ctx, "old", topic), "a group with offsets of its own")
}
