package store_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// bounded is a store through a proxy, its attempts bounded, its retries
// recorded.
type bounded struct {
	*store.Store
	proxy   *tcpproxy.Proxy
	retries *startRetries
}

func boundedStore(t *testing.T, limit time.Duration) *bounded {
	t.Helper()
	sch, proxy := proxiedSchema(t)
	b := &bounded{proxy: proxy, retries: newStartRetries()}
	b.Store = sch.Open(t, store.Config{MaxConns: 1, AttemptTimeout: limit, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		OnRetry: b.retries.record})
	t.Cleanup(proxy.Restore) // before the store closes
	_, err := b.Pool.Exec(context.Background(), `CREATE TABLE effects (id serial PRIMARY KEY, note text NOT NULL UNIQUE)`)
	require.NoError(t, err)
	return b
}

// A transaction whose connection stops answering in the middle (the
// server's host gone without a reset) is not held until TCP gives up: its
// attempt's bound closes the connection, and it is retried, also when fn's
// statements run under a context with no deadline. The retry's bound is
// twice the first's: the proxy still hangs when it asks for a connection.
func TestInTxAttemptBounded(t *testing.T) {
	t.Parallel()
	for _, batch := range []bool{false, true} {
		name := map[bool]string{false: "InTx", true: "InTxBatch"}[batch]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const limit = 300 * time.Millisecond
			st := boundedStore(t, limit)
			ctx := context.Background()
			calls := 0
			insert := func(tx pgx.Tx) error {
				calls++
				if _, err := tx.Exec(ctx, `INSERT INTO effects (note) VALUES ('once')`); err != nil {
					return err
				}
				if calls == 1 {
					st.proxy.Hang() // nothing the server says reaches us now
				}
				_, err := tx.Exec(ctx, `SELECT 1`)
				return err
			}
			done := make(chan error, 1)
			go func() {
				if !batch {
					done <- st.InTx(ctx, insert)
					return
				}
				done <- st.InTxBatch(ctx, func(tx pgx.Tx, first, _ *pgx.Batch) error {
					first.Queue(`SELECT 1`)
					if err := tx.SendBatch(ctx, first).Close(); err != nil {
						return err
					}
					return insert(tx)
				})
			}()
			st.retries.awaitRetry(t, done) // the hung attempt ended
			// The retry waits for a connection the proxy holds: its bound,
			// twice the first, ends it too.
			require.Eventually(t, func() bool { return len(st.retries.all()) >= 2 }, 30*time.Second, 10*time.Millisecond)
			st.proxy.Restore()
			require.NoError(t, awaitDone(t, done))
			errs := st.retries.all()
			for _, err := range errs[:2] {
				require.ErrorIs(t, err, store.ErrTransient)
				require.ErrorIs(t, err, store.ErrAttemptTimedOut)
			}
			require.Contains(t, errs[0].Error(), "after 300ms")
			require.Contains(t, errs[1].Error(), "after 600ms")
			require.Equal(t, 1, countEffects(t, st.Store), "the hung attempt rolled back, the last committed")
			require.Zero(t, st.Pool.Stat().AcquiredConns())
		})
	}
}

// The statements of their own that run outside a transaction are bounded
// as an attempt is: a connection that stops answering ends them at the
// bound, with a transient error, instead of holding the caller (the vacuum
// loop, the maintenance loop, a replica's join) until TCP gives up.
func TestStatementsOfTheirOwnBounded(t *testing.T) {
	t.Parallel()
	for name, call := range map[string]func(context.Context, *store.Store) error{
		"Prune": func(ctx context.Context, st *store.Store) error {
			_, err := st.Prune(ctx, time.Hour, time.Hour, 10)
			return err
		},
		"CheckGroup": func(ctx context.Context, st *store.Store) error { return st.CheckGroup(ctx, "g", "commands") },
		"ReadVacuumSettings": func(ctx context.Context, st *store.Store) error {
			_, err := st.ReadVacuumSettings(ctx)
			return err
		},
		"ReadTableStats": func(ctx context.Context, st *store.Store) error {
			_, err := st.ReadTableStats(ctx)
			return err
		},
		"Vacuum": func(ctx context.Context, st *store.Store) error {
			_, err := st.Vacuum(ctx, []string{"effects"})
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			// A bound the call before the hang keeps on a loaded machine
			// (300 ms did not, under -race beside the other subtests).
			st := boundedStore(t, 2*time.Second)
			ctx := context.Background()
			require.NoError(t, st.Migrate(ctx))
			require.NoError(t, call(ctx, st.Store), "answered")
			st.proxy.Hang()
			done := make(chan error, 1)
			go func() { done <- call(ctx, st.Store) }()
			select {
			case err := <-done:
				require.ErrorIs(t, err, store.ErrTransient)
				require.ErrorIs(t, err, store.ErrAttemptTimedOut)
			case <-time.After(20 * time.Second):
				t.Fatal("still waiting for a server that stopped answering")
			}
		})
	}
}

// An attempt that outlives its bound while its statements run under a
// context of their own is not held for them: the bound closes the
// connection at once, the statement fails, and the error is the bound's.
// One that answers within the bound is left alone, whatever ctx says.
func TestAttemptBoundKeepsCallersContext(t *testing.T) {
	t.Parallel()
	st := testdb.NewSchema(t).Open(t, store.Config{AttemptTimeout: time.Minute})
	ctx, cancel := context.WithCancel(context.Background())
	err := st.InTx(ctx, func(tx pgx.Tx) error {
		cancel()
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	})
	require.ErrorIs(t, err, context.Canceled)
	require.False(t, errors.Is(err, store.ErrAttemptTimedOut), "the caller's cancel is not the bound's: %v", err)
	require.NoError(t, st.InTx(context.Background(), func(tx pgx.Tx) error {
		_, err := tx.Exec(context.Background(), `SELECT pg_sleep(0.2)`)
		return err
	}))
}

// A transaction whose client stops between statements (its process
// paused, or cut off from the server) is ended by PostgreSQL after
// IdleInTransactionTimeout, which releases its row locks for the others:
// here another transaction waiting on its row. The paused attempt's next
// statement then fails as transient, and InTx runs it again.
func TestIdleTransactionEndedByServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	st := sch.Open(t, store.Config{IdleInTransactionTimeout: 300 * time.Millisecond, RetryBase: time.Millisecond})
	other := sch.Open(t, store.Config{})
	_, err := st.Pool.Exec(ctx, `CREATE TABLE effects (id int PRIMARY KEY, note text NOT NULL); INSERT INTO effects VALUES (1, '')`)
	require.NoError(t, err)
	var timeout string
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW idle_in_transaction_session_timeout`).Scan(&timeout))
	require.Equal(t, "300ms", timeout)

	calls := 0
	require.NoError(t, st.InTx(ctx, func(tx pgx.Tx) error {
		calls++
		if _, err := tx.Exec(ctx, `UPDATE effects SET note = note || 'a' WHERE id = 1`); err != nil {
			return err
		}
		if calls == 1 {
			// Paused, as far as the server can tell: this waits on the row
			// until the server ends the paused transaction.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			_, err := other.Pool.Exec(wctx, `UPDATE effects SET note = note || 'b' WHERE id = 1`)
			require.NoError(t, err, "the other transaction got the row")
		}
		_, err := tx.Exec(ctx, `SELECT 1`)
		return err
	}))
	require.Equal(t, 2, calls, "the ended attempt was run again")
	var note string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT note FROM effects WHERE id = 1`).Scan(&note))
	require.Equal(t, "ba", note, "the ended attempt's update rolled back")

	requireTimeoutGiven(t, sch, "idle_in_transaction_session_timeout", "1min", store.Config{IdleInTransactionTimeout: -1})
}

// requireTimeoutGiven checks that a timeout setting the connection string
// gives (60000 ms, which SHOW prints as shown) wins, and that cfg, setting
// it negative, leaves the server's (none).
func requireTimeoutGiven(t *testing.T, sch testdb.Schema, setting, shown string, cfg store.Config) {
	t.Helper()
	requireGiven(t, sch, setting, "60000", shown)
	var timeout string
	require.NoError(t, sch.Open(t, cfg).Pool.QueryRow(context.Background(), `SHOW `+setting).Scan(&timeout))
	require.Equal(t, "0", timeout)
}

// requireGiven checks that setting, given value by the connection string,
// which SHOW prints as shown, is left so by the pool's connections: given
// as a parameter of its own or in options (-c name=value, --name=value,
// with PostgreSQL's backslash escapes and spaces, the name's dashes for
// underscores, switches clustered: -e, European dates, then -c), the name
// in any case.
func requireGiven(t *testing.T, sch testdb.Schema, setting, value, shown string) {
	t.Helper()
	for _, param := range [][2]string{
		{setting, value},
		{strings.ToUpper(setting), value},
		{"options", "-c " + setting + "=" + value},
		{"options", `-c application_name=a\ b  -c` + setting + "=" + value},
		{"options", "-c " + strings.ToUpper(strings.ReplaceAll(setting, "_", `\_`)) + "=" + value},
		{"options", "--" + strings.ReplaceAll(setting, "_", "-") + "=" + value + " -c application_name=b"},
		{"options", "-ec " + setting + "=" + value},
	} {
		given := sch
		given.URL = connstr.WithParam(sch.URL, param[0], param[1])
		var got string
		require.NoError(t, given.Open(t, store.Config{}).Pool.QueryRow(context.Background(), `SHOW `+setting).Scan(&got))
		require.Equal(t, shown, got, "%s=%s", param[0], param[1])
	}
}

// A statement that waits on a row longer than LockTimeout fails, and its
// transaction releases the rows it held even though its client never ends
// it: the client of a frozen replica, whose statement the server ran on.
// Waiting on instead, it would get the row once the holder's transaction
// ended and then hold both until IdleInTransactionTimeout ended its own.
// A live client's transaction that fails so is retried (a Conflict),
// promptly, and commits once the row is free.
func TestLockWaitBoundedByLockTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	var retries, later atomic.Int32
	// No idle timeout: a slow machine's pause must not end the holder.
	st := sch.Open(t, store.Config{LockTimeout: 100 * time.Millisecond, IdleInTransactionTimeout: -1, RetryBase: time.Millisecond,
		OnRetry: func(_ int, err error, delay time.Duration) {
			if store.Conflict(err) {
				retries.Add(1)
			}
			if delay > time.Millisecond {
				later.Add(1)
			}
		}})
	other := sch.Open(t, store.Config{})
	_, err := st.Pool.Exec(ctx, `CREATE TABLE effects (id int PRIMARY KEY, note text NOT NULL); INSERT INTO effects VALUES (1, ''), (2, '')`)
	require.NoError(t, err)
	var timeout string
	require.NoError(t, other.Pool.QueryRow(ctx, `SHOW lock_timeout`).Scan(&timeout))
	require.Equal(t, "2s", timeout, "the default")

	holder, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer holder.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	_, err = holder.Exec(ctx, `UPDATE effects SET note = note || 'h' WHERE id = 1`)
	require.NoError(t, err)

	// The frozen client's transaction: row 2 taken, then a wait on row 1.
	frozen, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer frozen.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	_, err = frozen.Exec(ctx, `UPDATE effects SET note = note || 'f' WHERE id = 2`)
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second) // not for ever, should the wait be unbounded
	defer cancel()
	_, err = frozen.Exec(wctx, `UPDATE effects SET note = note || 'f' WHERE id = 1`)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, err, &pgErr)
	require.Equal(t, "55P03", pgErr.Code)
	require.True(t, store.Conflict(err))
	require.True(t, store.RunTimeTransient(err))
	// Still open, never rolled back: row 2 is free all the same.
	_, err = other.Pool.Exec(ctx, `SELECT FROM effects WHERE id = 2 FOR UPDATE NOWAIT`)
	require.NoError(t, err, "the failed wait's transaction still holds row 2")

	// A transaction retried while the holder keeps row 1, then committed.
	calls := 0
	done := make(chan error, 1)
	go func() {
		done <- st.InTx(ctx, func(tx pgx.Tx) error {
			calls++
			_, err := tx.Exec(ctx, `UPDATE effects SET note = note || 'r' WHERE id = 1`)
			return err
		})
	}()
	require.Eventually(t, func() bool { return retries.Load() >= 3 }, 10*time.Second, 10*time.Millisecond,
		"the transaction waiting on the row is refused and retried")
	select {
	case err := <-done:
		t.Fatalf("committed while the holder held the row: %v", err)
	default:
	}
	require.NoError(t, holder.Commit(ctx))
	require.NoError(t, <-done)
	var note string
	require.NoError(t, other.Pool.QueryRow(ctx, `SELECT note FROM effects WHERE id = 1`).Scan(&note))
	require.Equal(t, "hr", note)
	require.GreaterOrEqual(t, calls, 4)
	require.Zero(t, later.Load(), "each retry after RetryBase: the attempt waited already")

	requireTimeoutGiven(t, sch, "lock_timeout", "1min", store.Config{LockTimeout: -1})
}

// Whether the connection string set one of the pool's settings is the
// server's word, not the client's reading of options: where the server
// took none, the pool's bound holds. Here the argument of a switch that
// takes one (-D's, which the server ignores from a client), and options a
// proxy dropped (pgbouncer's ignore_startup_parameters).
func TestBoundSetUnlessTheServerTookTheURLs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	dropping := startupRewriter(t, sch, []string{"options"}, "")
	for name, url := range map[string]string{
		"a switch's argument":        connstr.WithParam(sch.URL, "options", "-D -clock_timeout=1"),
		"options dropped by a proxy": connstr.WithParam(dropping.URL, "options", "-c lock_timeout=1"),
	} {
		t.Run(name, func(t *testing.T) {
			plain, err := pgx.Connect(ctx, url)
			require.NoError(t, err)
			var timeout string
			require.NoError(t, plain.QueryRow(ctx, `SHOW lock_timeout`).Scan(&timeout))
			require.NoError(t, plain.Close(ctx))
			require.Equal(t, "0", timeout, "the server's own")

			given := sch
			given.URL = url
			require.NoError(t, given.Open(t, store.Config{}).Pool.QueryRow(ctx, `SHOW lock_timeout`).Scan(&timeout))
			require.Equal(t, "2s", timeout)
		})
	}
}

// A server, or a proxy, reporting PostgreSQL 17 or later (here a proxy
// reporting a version of its own) without its transaction_timeout: the
// pool's connections and Probe's do without the setting, lifting
// statement_timeout and setting their bounds, rather than fail.
func TestSettingTheServerLacksLeftOut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	var has bool
	require.NoError(t, sch.Open(t, store.Config{}).Pool.QueryRow(ctx, `SELECT current_setting('transaction_timeout', true) IS NOT NULL`).Scan(&has))
	if has {
		t.Skip("the server has transaction_timeout (PostgreSQL 17 or later): nothing to leave out")
	}
	timed := startupRewriter(t, sch, nil, "17.2")
	plain, err := pgx.Connect(ctx, timed.URL)
	require.NoError(t, err)
	defer plain.Close(ctx)
	require.Equal(t, "17.2", plain.PgConn().ParameterStatus("server_version"))

	st := timed.Open(t, store.Config{})
	var lockTimeout string
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW lock_timeout`).Scan(&lockTimeout))
	require.Equal(t, "2s", lockTimeout)
	require.NoError(t, st.Probe(ctx, 5*time.Second))
	require.NotNil(t, st.ProbeConn(), "Probe's connection set up")
	require.NoError(t, st.ProbeConn().QueryRow(ctx, `SHOW lock_timeout`).Scan(&lockTimeout))
	require.Equal(t, "2s", lockTimeout)
}

// A statement_timeout the server, database or role sets (managed and
// hardened PostgreSQL often do; here the role's), and PostgreSQL 17's
// transaction_timeout, does not bound the pool's statements, as it does
// not a migration's: the worker's transactions have bounds of their own
// (AttemptTimeout, doubled after an attempt that outlasted it), and
// PostgreSQL's 57014 is no failure InTx retries, so a statement that
// always outlasts the role's timeout would fail for good. The bound's own
// end is still ErrAttemptTimedOut, retried with a longer bound until the
// transaction commits.
func TestServerStatementTimeoutLifted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	admin := sch.Open(t, store.Config{})
	role := newRole(t, admin, true)
	var transactionTimeout bool // PostgreSQL 17 and later
	require.NoError(t, admin.Pool.QueryRow(ctx, `SELECT current_setting('transaction_timeout', true) IS NOT NULL`).Scan(&transactionTimeout))
	_, err := admin.Pool.Exec(ctx, `ALTER ROLE `+role+` SET statement_timeout = 100`)
	require.NoError(t, err)
	if transactionTimeout {
		_, err := admin.Pool.Exec(ctx, `ALTER ROLE `+role+` SET transaction_timeout = 100`)
		require.NoError(t, err)
	}
	// A bound the role sets in this database is the pool's all the same.
	var database string
	require.NoError(t, admin.Pool.QueryRow(ctx, `SELECT current_database()`).Scan(&database))
	_, err = admin.Pool.Exec(ctx, `ALTER ROLE `+role+` IN DATABASE `+pgx.Identifier{database}.Sanitize()+` SET lock_timeout = 1`)
	require.NoError(t, err)
	timed := sch
	timed.URL = connstr.WithParam(sch.URL, "user", role)
	plain, err := pgx.Connect(ctx, timed.URL)
	require.NoError(t, err)
	defer plain.Close(ctx)
	var timeout, lockTimeout string
	require.NoError(t, plain.QueryRow(ctx, `SELECT current_setting('statement_timeout'), current_setting('lock_timeout')`).Scan(&timeout, &lockTimeout))
	require.Equal(t, "100ms", timeout, "the role's setting")
	require.Equal(t, "1ms", lockTimeout, "the role's setting in the database")

	st := timed.Open(t, store.Config{})
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW lock_timeout`).Scan(&lockTimeout))
	require.Equal(t, "2s", lockTimeout)
	_, err = st.Pool.Exec(ctx, `SELECT pg_sleep(0.3)`)
	require.NoError(t, err)
	require.NoError(t, st.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT pg_sleep(0.3)`)
		return err
	}))

	retries := newStartRetries()
	bounded := timed.Open(t, store.Config{AttemptTimeout: 100 * time.Millisecond, RetryBase: time.Millisecond, OnRetry: retries.record})
	require.NoError(t, bounded.InTx(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `SELECT pg_sleep(0.3)`)
		return err
	}))
	errs := retries.all()
	require.NotEmpty(t, errs)
	for _, err := range errs {
		require.ErrorIs(t, err, store.ErrTransient)
		require.ErrorIs(t, err, store.ErrAttemptTimedOut)
	}

	// One the connection string gives wins, as for the other settings.
	requireGiven(t, timed, "statement_timeout", "60000", "1min")
}

// A statement_timeout the database sets (a role's is the same) does not
// bound a new connection's settings statement, the one that lifts it: that
// statement reads pg_settings, 10 to 40 ms on a new connection, and a
// timeout below that failed the start (exit 1) and the pool's later
// connections with 57014. Here the statement waits for pg_settings, which
// the test locks, for twice the timeout: a stand-in for a slow statement
// that ends when the test says, not with the machine's speed. (A database
// of its own: the lock holds up every new connection to its database.)
// One the connection string gives still wins.
func TestDatabaseStatementTimeoutLiftedFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const statementTimeout = 200 * time.Millisecond
	db, locker := timedDatabase(t, statementTimeout)
	tx, err := lockSettings(ctx, locker)
	requireLocked(t, err)

	var st *store.Store
	done := make(chan error, 1)
	go func() {
		var err error
		st, err = store.Open(ctx, store.Config{URL: db.URL, MaxConns: 2})
		done <- err
	}()
	awaitLockWait(t, db.URL, "pg_catalog.pg_settings", 2*statementTimeout, done)
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, awaitDone(t, done))
	t.Cleanup(st.Close)
	var timeout string
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout))
	require.Equal(t, "0", timeout)

	requireGiven(t, db, "statement_timeout", "60000", "1min")
}

// timedDatabase returns a database of its own whose statement_timeout is
// d (a role's would do the same), and a connection to it (closed with the
// test) for lockSettings: the lock holds up every new connection to the
// database.
func timedDatabase(t *testing.T, d time.Duration) (testdb.Schema, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	db := testdb.NewDatabase(t, "")
	c, err := pgx.Connect(ctx, db.URL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.WithoutCancel(ctx)) })
	_, err = c.Exec(ctx, `ALTER DATABASE `+db.Name+` SET statement_timeout = `+strconv.FormatInt(d.Milliseconds(), 10))
	require.NoError(t, err)
	return db, c
}

// lockSettings locks pg_settings, the view a connection's settings
// statement reads, in c's database until the transaction returned ends.
func lockSettings(ctx context.Context, c *pgx.Conn) (pgx.Tx, error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE`); err != nil {
		_ = tx.Rollback(ctx)
		return nil, err
	}
	return tx, nil
}

// requireLocked fails the test with lockSettings's err, or skips it when
// the test user may not lock pg_settings.
func requireLocked(t *testing.T, err error) {
	t.Helper()
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" { // insufficient_privilege
		testdb.SkipMissing(t, "the test user may not lock pg_catalog.pg_settings: it needs to be a superuser")
	}
	require.NoError(t, err, "locking pg_settings")
}

// awaitLockWait returns once a session of the database at url has waited
// longer than d for a lock on relation (resolved on url's search_path),
// failing the test if done, the waiter's end, comes first. It watches on a
// connection of its own, in no transaction: one in a transaction, such as
// lockSettings's, sees pg_stat_activity as the transaction's first look at
// it found it.
func awaitLockWait(t *testing.T, url, relation string, d time.Duration, done <-chan error) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer c.Close(ctx)
	giveUp := time.After(30 * time.Second)
	for waited := false; !waited; {
		select {
		case err := <-done:
			t.Fatalf("ended while it waited for %s: %v", relation, err)
		case <-giveUp:
			t.Fatalf("nothing waited for %s", relation)
		case <-time.After(10 * time.Millisecond):
		}
		require.NoError(t, c.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE a.datname = current_database() AND l.relation = $1::regclass AND NOT l.granted
			AND clock_timestamp() - a.query_start > $2::interval)`, relation, d).Scan(&waited))
	}
}

// Each connection has the server notice a client host gone in about
// ClientGoneTimeout (30 s): keepalives for an idle connection, a user
// timeout for an answer left unacknowledged. (The host's vanishing itself
// needs a network that drops packets, which this machine cannot make.)
func TestClientGoneSettings(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	st := sch.Open(t, store.Config{})
	var tcp bool
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT inet_client_addr() IS NOT NULL`).Scan(&tcp))
	if !tcp {
		testdb.SkipMissing(t, "TEST_DATABASE_URL reaches PostgreSQL over a Unix socket, which has no TCP settings: point it at host:port")
	}
	// Probe's connection, apart from the pool, has them too.
	require.NoError(t, st.Probe(ctx, 5*time.Second))
	probe := st.ProbeConn()
	require.NotNil(t, probe)
	for setting, want := range map[string]string{
		"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3", "tcp_user_timeout": "30000",
	} {
		var got string
		require.NoError(t, st.Pool.QueryRow(ctx, `SHOW `+setting).Scan(&got))
		require.Equal(t, want, got, setting)
		require.NoError(t, probe.QueryRow(ctx, `SHOW `+setting).Scan(&got))
		require.Equal(t, want, got, "Probe's "+setting)
	}
	// SHOW prints the TCP settings as bare numbers, without units.
	requireTimeoutGiven(t, sch, "tcp_user_timeout", "60000", store.Config{ClientGoneTimeout: -1})
}
