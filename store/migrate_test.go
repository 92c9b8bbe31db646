package store_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/migrations"
	"github.com/omninode/lockworker/store"
)

// lastMigration is the number of migration files.
func lastMigration(t *testing.T) int {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	return len(files)
}

// migrateTo takes st's schema to version with tern alone. Its connection
// is closed after, not returned to the pool: tern's RESET ALL undid the
// pool's AfterConnect (plan_cache_mode), as store.Migrate knows.
// migrationsFrom names the migration files from version on, in order: those
// a schema at version-1 applies.
func migrationsFrom(t *testing.T, version int) []string {
	t.Helper()
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	require.Greater(t, len(files), version-1)
	return files[version-1:]
}

func migrateTo(t *testing.T, st *store.Store, version int32) {
	t.Helper()
	ctx := context.Background()
	pooled, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	conn := pooled.Hijack()
	defer conn.Close(ctx) //nolint:errcheck
	// tern's lock is one for the whole database: other tests' migrations
	// may hold it longer than the pool's lock_timeout.
	_, err = conn.Exec(ctx, "SET lock_timeout = 0")
	require.NoError(t, err)
	m, err := migrate.NewMigrator(ctx, conn, store.VersionTable)
	require.NoError(t, err)
	require.NoError(t, m.LoadMigrations(migrations.FS))
	require.NoError(t, m.MigrateTo(ctx, version))
}

// migrateLog records MigrateEvents.
type migrateLog struct {
	mu      sync.Mutex
	pending [][2]int
	waited  int
	started []string
	applied []string
}

func (l *migrateLog) events() store.MigrateEvents {
	return store.MigrateEvents{
		Pending:        func(from, to int) { l.mu.Lock(); l.pending = append(l.pending, [2]int{from, to}); l.mu.Unlock() },
		WaitingForLock: func() { l.mu.Lock(); l.waited++; l.mu.Unlock() },
		Started:        func(name string) { l.mu.Lock(); l.started = append(l.started, name); l.mu.Unlock() },
		Applied: func(name string, took time.Duration) {
			l.mu.Lock()
			defer l.mu.Unlock()
			if took < 0 {
				name += " (negative duration)"
			}
			l.applied = append(l.applied, name)
		},
	}
}

// A migration that needs a table another transaction holds (an older
// replica's, during a rolling upgrade) gives up at its lock_timeout with
// 55P03 instead of waiting for ever, and with every transaction on the
// table queued behind it; the start retries it, telling OnStartRetry the
// migration and why, and it is applied once the blocker commits.
func TestMigrateLockWaitIsBoundedAndRetried(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newStartRetries()
	sc := testdb.NewSchema(t)
	cfg := r.config(sc.URL)
	cfg.MigrationLockTimeout = 300 * time.Millisecond
	var (
		delaysMu sync.Mutex
		delays   []time.Duration
	)
	told := cfg.OnStartRetry
	cfg.OnStartRetry = func(attempt int, err error, delay time.Duration) {
		delaysMu.Lock()
		delays = append(delays, delay)
		delaysMu.Unlock()
		told(attempt, err, delay)
	}
	st := sc.Open(t, cfg)
	migrateTo(t, st, 9) // 010 alters locks

	tx := holdLocks(t, sc.URL)

	listener, err := pgx.Connect(ctx, sc.URL)
	require.NoError(t, err)
	defer listener.Close(ctx)
	_, err = listener.Exec(ctx, `LISTEN lockworker_migration_lock_timed_out`)
	require.NoError(t, err)

	var log migrateLog
	done := make(chan error, 1)
	go func() { done <- st.MigrateWith(ctx, log.events()) }()
	r.awaitRetry(t, done)
	r.awaitRetry(t, done) // again: it keeps retrying while the blocker holds on

	// Each failed attempt tells the replicas waiting for tern's lock.
	nctx, ncancel := context.WithTimeout(ctx, 5*time.Second)
	defer ncancel()
	for {
		// The channel is the database's: a parallel test's schema tells
		// its own failures on it too.
		note, err := listener.WaitForNotification(nctx)
		require.NoError(t, err)
		if strings.HasPrefix(note.Payload, sc.Name+"\n") {
			require.Equal(t, sc.Name+"\n010_lock_delay_max_hold_revoke.sql", note.Payload)
			break
		}
	}

	// Others' transactions on locks are not stuck behind the waiting migration.
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var n int
	require.NoError(t, st.Pool.QueryRow(qctx, `SELECT count(*) FROM locks`).Scan(&n), "a reader of locks waited behind the migration")

	errs := r.all()
	require.NotEmpty(t, errs)
	for _, err := range errs {
		require.ErrorIs(t, err, store.ErrTransient)
		var lockErr *store.MigrationLockError
		require.ErrorAs(t, err, &lockErr)
		require.Equal(t, "010_lock_delay_max_hold_revoke.sql", lockErr.Migration)
		require.GreaterOrEqual(t, lockErr.Took, 300*time.Millisecond)
		require.Contains(t, err.Error(), "migration 010_lock_delay_max_hold_revoke.sql waited 300ms for a lock on a table it changes: another transaction holds a lock on it")
		var pgErr *pgconn.PgError
		require.ErrorAs(t, err, &pgErr)
		require.Equal(t, "55P03", pgErr.Code)
	}

	require.NoError(t, tx.Commit(ctx))
	require.NoError(t, awaitDone(t, done))
	requireSchema(t, st)
	delaysMu.Lock()
	for _, d := range delays {
		// The tables get at least as long as each attempt stalled them,
		// not RetryMax's 20 ms.
		require.GreaterOrEqual(t, d, 300*time.Millisecond)
		require.Less(t, d, 2*time.Second)
	}
	delaysMu.Unlock()

	log.mu.Lock()
	defer log.mu.Unlock()
	last := lastMigration(t)
	require.Equal(t, [2]int{9, last}, log.pending[0], "each attempt tells the versions")
	require.Equal(t, "010_lock_delay_max_hold_revoke.sql", log.started[0])
	require.Equal(t, migrationsFrom(t, 10), log.applied, "each applied once, in order, when it committed")
}

// Without RetryStart, a migration blocked on a table's lock fails at its
// lock_timeout, not later.
func TestMigrateLockWaitFailsWithoutRetryStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	st := sc.Open(t, store.Config{MigrationLockTimeout: 300 * time.Millisecond})
	migrateTo(t, st, 9)
	tx, err := st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `SELECT count(*) FROM locks`)
	require.NoError(t, err)

	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = st.Migrate(mctx)
	require.NoError(t, mctx.Err(), "Migrate waited for the lock until the test's deadline")
	var lockErr *store.MigrationLockError
	require.ErrorAs(t, err, &lockErr)
	require.Equal(t, "010_lock_delay_max_hold_revoke.sql", lockErr.Migration)
	var version int
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT version FROM `+store.VersionTable).Scan(&version))
	require.Equal(t, 9, version, "010 rolled back whole")
}

// A schema a newer lockworker migrated further than this binary's files
// (a downgrade), whose migrations do not allow this binary's, is refused at
// once, with both versions and what to do, and not retried.
func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newStartRetries()
	sc := testdb.NewSchema(t)
	st := sc.Open(t, r.config(sc.URL))
	require.NoError(t, st.Migrate(ctx))
	last := lastMigration(t)
	_, err := st.Pool.Exec(ctx, `UPDATE `+store.VersionTable+` SET version = $1`, last+2)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `UPDATE `+store.CompatTable+` SET oldest_reader = $1`, last+1)
	require.NoError(t, err)

	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err = st.Migrate(mctx)
	require.ErrorIs(t, err, store.ErrSchemaNewer)
	require.False(t, errors.Is(err, store.ErrTransient))
	require.Empty(t, r.all(), "retried")
	var newer *store.SchemaNewerError
	require.ErrorAs(t, err, &newer)
	// The schema allows binaries from last+1 on: the message names those,
	// not only the schema's own version.
	require.Equal(t, store.SchemaNewerError{Version: last + 2, Latest: last, OldestReader: last + 1}, *newer)
	require.Contains(t, err.Error(), fmt.Sprintf("database schema is at version %d, newer than this binary's %d: run a lockworker built with migration %d or later",
		last+2, last, last+1))
}

// A schema migrated further than this binary's files whose migrations
// allow binaries of its last one (as after additive migrations during a
// rolling upgrade, for an older replica that restarts) is left as is, told
// to Newer: the binary runs on it.
func TestMigrateRunsOnANewerSchemaThatAllowsIt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	st := sc.Open(t, store.Config{MaxConns: 2})
	require.NoError(t, st.Migrate(ctx))
	last := lastMigration(t)
	_, err := st.Pool.Exec(ctx, `UPDATE `+store.VersionTable+` SET version = $1`, last+2)
	require.NoError(t, err)
	_, err = st.Pool.Exec(ctx, `UPDATE `+store.CompatTable+` SET oldest_reader = $1`, last)
	require.NoError(t, err)

	var told [][3]int
	require.NoError(t, st.MigrateWith(ctx, store.MigrateEvents{
		Pending: func(from, to int) { t.Errorf("pending from %d to %d", from, to) },
		Newer:   func(version, latest, oldest int) { told = append(told, [3]int{version, latest, oldest}) },
	}))
	require.Equal(t, [][3]int{{last + 2, last, last}}, told)
}

// Every migration after the one that made CompatTable sets it: whether
// the binaries it allowed run beside the new schema is each migration's
// to say.
func TestMigrationsSetTheOldestReader(t *testing.T) {
	files, err := fs.Glob(migrations.FS, "*.sql")
	require.NoError(t, err)
	made := slices.IndexFunc(files, func(f string) bool {
		sql, err := fs.ReadFile(migrations.FS, f)
		require.NoError(t, err)
		return strings.Contains(string(sql), "CREATE TABLE "+store.CompatTable)
	})
	require.NotEqual(t, -1, made)
	for _, f := range files[made+1:] {
		sql, err := fs.ReadFile(migrations.FS, f)
		require.NoError(t, err)
		require.Contains(t, string(sql), "UPDATE "+store.CompatTable+" SET oldest_reader", f)
	}
}

// A version that cannot be read (here a table no migration made, holding
// no number; as well a lost connection, a stop) is no answer about the
// schema: the migration ends there, saying so, without claiming the
// schema is behind at version 0 and without running tern on it.
func TestMigrateStopsAtAnUnreadableVersion(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	st := sc.Open(t, store.Config{})
	_, err := st.Pool.Exec(ctx, `CREATE TABLE `+store.VersionTable+` (version text); INSERT INTO `+store.VersionTable+` VALUES ('x')`)
	require.NoError(t, err)
	log := &migrateLog{}
	err = st.MigrateWith(ctx, log.events())
	require.ErrorContains(t, err, "migrating: reading the schema version")
	require.Empty(t, log.pending, "told the schema is behind")
	require.Empty(t, log.started)
}

// migrateBehindTernLock holds tern's migration lock on a connection of its
// own (holder, closed when the test ends), starts st's migration, and
// returns once the migration says it waits for the lock; done gets its
// error.
func migrateBehindTernLock(t *testing.T, ctx context.Context, url string, st *store.Store) (holder *pgx.Conn, log *migrateLog, done chan error) {
	t.Helper()
	holder, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = holder.Close(context.WithoutCancel(ctx)) })
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(9628173550095224)`)
	require.NoError(t, err)
	log = &migrateLog{}
	done = make(chan error, 1)
	go func() { done <- st.MigrateWith(ctx, log.events()) }()
	require.Eventually(t, func() bool { log.mu.Lock(); defer log.mu.Unlock(); return log.waited == 1 }, 10*time.Second, 10*time.Millisecond)
	return holder, log, done
}

// A migration waiting for another session's migration lock (tern's
// advisory lock) says so first, then migrates once it is free. Not
// parallel: it holds that lock, one for the whole database, for a moment,
// and every migration meanwhile (this package's parallel tests' and other
// packages' running against the same database) waits for it. Its ctx ends
// with the test, so MigrateWith's goroutine does not outlive it.
func TestMigrateTellsLockWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	sc := testdb.NewSchema(t)
	migrateTo(t, sc.Open(t, store.Config{}), 14)
	// The pool's lock_timeout, shorter than the hold, does not bound the
	// wait, nor does a statement_timeout the server, database or role
	// sets (here the connection string's).
	timed := sc
	timed.URL = connstr.WithParam(sc.URL, "statement_timeout", "100")
	st := timed.Open(t, store.Config{LockTimeout: 20 * time.Millisecond})
	t.Cleanup(cancel) // before st closes (cleanups run last first), which waits for its connections

	holder, log, done := migrateBehindTernLock(t, ctx, sc.URL, st)
	select {
	case err := <-done:
		t.Fatalf("migrated while the lock was held: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	_, err := holder.Exec(ctx, `SELECT pg_advisory_unlock(9628173550095224)`)
	require.NoError(t, err)
	require.NoError(t, awaitDone(t, done))
	// Checked without the 100 ms statement_timeout, which the catalog
	// reads of the check can outlast on a busy machine.
	requireSchema(t, sc.Open(t, store.Config{}))
	log.mu.Lock()
	defer log.mu.Unlock()
	require.Equal(t, migrationsFrom(t, 15), log.applied)
}

// A replica retrying its start that waited for tern's lock while another
// session's attempt timed out on a table's lock (told by NOTIFY) backs off
// without an attempt of its own, rather than stall the tables again at
// once, then migrates. Not parallel: it holds the database-wide migration
// lock for a moment (other packages' migrations wait meanwhile).
func TestMigrateBacksOffBehindATimedOutAttempt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newStartRetries()
	sc := testdb.NewSchema(t)
	cfg := r.config(sc.URL)
	cfg.MigrationLockTimeout = 300 * time.Millisecond
	st := sc.Open(t, cfg)
	t.Cleanup(cancel) // before st closes (cleanups run last first), which waits for its connections
	migrateTo(t, st, 9)

	holder, log, done := migrateBehindTernLock(t, ctx, sc.URL, st)
	// As a failed attempt does, before its lock goes; another schema's is not this one's.
	_, err := holder.Exec(ctx, `SELECT pg_notify('lockworker_migration_lock_timed_out', 'other_schema' || E'\n' || '011_sessions.sql'),
		pg_notify('lockworker_migration_lock_timed_out', current_schema() || E'\n' || '010_lock_delay_max_hold_revoke.sql')`)
	require.NoError(t, err)
	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock(9628173550095224)`)
	require.NoError(t, err)

	r.awaitRetry(t, done)
	errs := r.all()
	var lockErr *store.MigrationLockError
	require.ErrorAs(t, errs[0], &lockErr)
	require.Positive(t, lockErr.Took, "its wait for the lock, which the failed attempt's overlapped")
	lockErr.Took = 0
	require.Equal(t, store.MigrationLockError{Migration: "010_lock_delay_max_hold_revoke.sql", Timeout: 300 * time.Millisecond, Behind: true}, *lockErr)
	require.ErrorIs(t, errs[0], store.ErrTransient)
	require.Contains(t, errs[0].Error(), "another session's attempt at it, which held the migration lock, timed out on a lock on a table it changes")
	log.mu.Lock()
	require.Empty(t, log.started, "started an attempt of its own")
	log.mu.Unlock()

	require.NoError(t, awaitDone(t, done))
	requireSchema(t, st)
	log.mu.Lock()
	defer log.mu.Unlock()
	require.Equal(t, "010_lock_delay_max_hold_revoke.sql", log.started[0])
}

// A statement_timeout the server, database or role sets (managed and
// hardened PostgreSQL often do; here the connection string, so that only
// this test's connections have it) does not bound a migration's
// statements: an index build over a large locks would fail with 57014 at
// every start. A statement of 010 that waits for a table's lock (within
// MigrationLockTimeout) stands in for a long one: the wait counts towards
// statement_timeout, and ends when the test says, not with the machine's
// speed. (The timeout is not 1 ms: tern's statements after its RESET ALL,
// the version's update and the COMMIT, and the pool's own setup, run under
// it, as they would on such a server.)
func TestMigrateIgnoresStatementTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	migrateTo(t, sc.Open(t, store.Config{}), 9) // 010 alters locks

	tx := holdLocks(t, sc.URL)

	const statementTimeout = 200 * time.Millisecond
	timed := sc
	timed.URL = connstr.WithParam(sc.URL, "statement_timeout", strconv.FormatInt(statementTimeout.Milliseconds(), 10))
	st := timed.Open(t, store.Config{MigrationLockTimeout: time.Minute})
	var timeout string
	require.NoError(t, st.Pool.QueryRow(ctx, `SHOW statement_timeout`).Scan(&timeout))
	require.Equal(t, "200ms", timeout)
	done := make(chan error, 1)
	go func() { done <- st.Migrate(ctx) }()

	// Released once the migration has waited for it twice the timeout.
	awaitLockWait(t, sc.URL, "locks", 2*statementTimeout, done)
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, awaitDone(t, done))
	requireSchema(t, sc.Open(t, store.Config{})) // read without the timeout, which a busy machine's catalog reads may pass
}

// A statement_timeout the database sets (a role's is the same), which
// tern's RESET ALL after each migration brings back, does not bound the
// next migration's statement setting its timeouts, the one that lifts it
// (it reads pg_settings: see TestDatabaseStatementTimeoutLiftedFirst,
// whose lock on pg_settings stands in for a slow statement here too, taken
// once the first migration has committed).
func TestMigrateLiftsDatabaseStatementTimeoutFirst(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const statementTimeout = 200 * time.Millisecond
	db, locker := timedDatabase(t, statementTimeout)
	st := db.Open(t, store.Config{}) // after: a session's RESET ALL returns to the database's setting as the session began

	var tx pgx.Tx
	locked := make(chan error, 1)
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- st.MigrateWith(ctx, store.MigrateEvents{Applied: func(string, time.Duration) {
			// Told as the next migration starts, inside its transaction,
			// before it sets its timeouts.
			once.Do(func() {
				var err error
				tx, err = lockSettings(ctx, locker)
				locked <- err
			})
		}})
	}()
	select {
	case err := <-locked:
		requireLocked(t, err)
	case err := <-done:
		t.Fatalf("migrated without a second migration: %v", err)
	}
	awaitLockWait(t, db.URL, "pg_catalog.pg_settings", 2*statementTimeout, done)
	require.NoError(t, tx.Rollback(ctx))
	require.NoError(t, awaitDone(t, done))
	requireSchema(t, st)
}

// holdLocks returns a transaction, on a connection of its own to url, that
// holds ACCESS SHARE on locks until it ends (010 alters locks, so it
// waits), closed with the test.
func holdLocks(t *testing.T, url string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	blocker, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { blocker.Close(context.WithoutCancel(ctx)) })
	tx, err := blocker.Begin(ctx)
	require.NoError(t, err)
	t.Cleanup(func() { tx.Rollback(context.WithoutCancel(ctx)) }) //nolint:errcheck // ended by the test, or with it
	_, err = tx.Exec(ctx, `SELECT count(*) FROM locks`)
	require.NoError(t, err)
	return tx
}

// A replica that freezes (the proxy hangs: TCP stays up, as for a paused
// container or a SIGSTOPped process) in the second migration of a run,
// after its statements took their locks, loses its session to the pool's
// idle_in_transaction_session_timeout, which releases the migration's
// ACCESS EXCLUSIVE locks: tern's RESET ALL after the first migration does
// not leave the rest of the run without it.
func TestMigrateFrozenInALaterMigrationReleasesItsLocks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	url, proxy := testdb.Proxied(t, sc.URL)
	st := testdb.Schema{Name: sc.Name, URL: url}.Open(t, store.Config{
		MaxConns: 2, IdleInTransactionTimeout: time.Second, MigrationLockTimeout: time.Minute,
	})
	migrateTo(t, st, 16)

	// A transaction of an older replica in the way of 018, the run's
	// second migration, which alters outbox.
	blocker, err := pgx.Connect(ctx, sc.URL)
	require.NoError(t, err)
	t.Cleanup(func() { blocker.Close(context.WithoutCancel(ctx)) })
	tx, err := blocker.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `LOCK TABLE outbox IN ROW EXCLUSIVE MODE`)
	require.NoError(t, err)

	var migrateErr error
	migrated := make(chan struct{})
	go func() { defer close(migrated); migrateErr = st.Migrate(ctx) }()
	t.Cleanup(func() { proxy.Restore(); <-migrated }) // before st.Close, which waits for its connection
	outbox := sc.Name + ".outbox"
	var pid int
	require.Eventually(t, func() bool {
		return blocker.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE relation = $1::regclass AND NOT granted`, outbox).Scan(&pid) == nil
	}, 30*time.Second, 10*time.Millisecond, "018 never waited for outbox")
	proxy.Hang() // the migrating replica freezes
	require.NoError(t, tx.Commit(ctx))

	require.Eventually(t, func() bool {
		var alive bool
		err := blocker.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)`, pid).Scan(&alive)
		return err == nil && !alive
	}, 10*time.Second, 20*time.Millisecond, "the frozen migration's session, idle in its transaction, still holds outbox")
	var held bool
	require.NoError(t, blocker.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_locks WHERE relation = $1::regclass)`, outbox).Scan(&held))
	require.False(t, held)
	proxy.Restore()
	<-migrated
	require.Error(t, migrateErr, "the migration's session was ended")
}

// A search_path naming another lockworker schema after this one's
// ("mine,other") does not make Migrate take this schema for migrated, nor
// create new tables in it unasked: it reads the version table of its
// current_schema(), and refuses while that has none and the other has.
func TestMigrateReadsTheVersionOfItsOwnSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	other := testdb.NewSchema(t)
	require.NoError(t, other.Open(t, store.Config{MaxConns: 2}).Migrate(ctx))
	mine := testdb.NewSchema(t)
	mine.URL = connstr.WithParam(testdb.URL(), "search_path", mine.Name+","+other.Name)
	st := mine.Open(t, store.Config{MaxConns: 2})
	// Its own schema empty, and another's on the search_path: which is
	// this deployment's, only the operator knows (the default "$user",
	// public after a schema named after the role appeared, empty): refused,
	// naming both, and nothing created.
	err := st.Migrate(ctx)
	require.ErrorContains(t, err, "schema "+mine.Name+", the first of the search_path that exists, has no lockworker tables, but schema "+other.Name+" further along it has")
	require.ErrorContains(t, err, other.Name+" to go on with those tables (search_path="+other.Name+" in DATABASE_URL, or ALTER ROLE ... SET search_path = "+other.Name)
	var created int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1`, mine.Name).Scan(&created))
	require.Zero(t, created)

	// Once its own schema is migrated (its search_path alone), the other's
	// further along is no matter: its own version table is read.
	alone := mine
	alone.URL = connstr.WithParam(testdb.URL(), "search_path", mine.Name)
	require.NoError(t, alone.Open(t, store.Config{MaxConns: 2}).Migrate(ctx))
	require.NoError(t, st.Migrate(ctx))
	requireSchema(t, st)
	var schema string
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'locks'::regclass`).Scan(&schema))
	require.Equal(t, mine.Name, schema)
}

// A schema whose name needs quotes is migrated, from a version table tern
// finds there (its own check does not, the name being quoted: it creates
// the table if not exists, which keeps the version), and read again.
func TestMigrateASchemaNamedWithQuotes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sc := testdb.NewSchema(t)
	sc.Name = `"` + sc.Name + ` Quoted"`
	admin := sc.Open(t, store.Config{MaxConns: 1})
	_, err := admin.Pool.Exec(ctx, "CREATE SCHEMA "+sc.Name)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, err := admin.Pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA "+sc.Name+" CASCADE")
		require.NoError(t, err)
	})
	sc.URL = connstr.WithParam(testdb.URL(), "search_path", sc.Name)
	st := sc.Open(t, store.Config{MaxConns: 2})
	migrateTo(t, st, 16)
	require.NoError(t, st.Migrate(ctx))
	requireSchema(t, st)
	require.NoError(t, st.Migrate(ctx))
}

// A search_path that names no existing schema leaves Migrate nothing to
// migrate: it says so, rather than failing in tern's first CREATE.
func TestMigrateWithoutASchema(t *testing.T) {
	t.Parallel()
	sc := testdb.NewSchema(t)
	sc.URL = connstr.WithParam(testdb.URL(), "search_path", sc.Name+"_missing")
	err := sc.Open(t, store.Config{MaxConns: 1}).Migrate(context.Background())
	require.ErrorContains(t, err, "names no schema that exists")
}
