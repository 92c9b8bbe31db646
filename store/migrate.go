package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/tern/v2/migrate"

	"github.com/omninode/lockworker/migrations"
)

// VersionTable records which migrations have been applied.
const VersionTable = "lockworker_schema_version"

// CompatTable, from migration 019 on, holds the oldest schema version
// whose binaries may run on the schema (its one row's oldest_reader),
// which every migration after 019 sets: a binary that finds the schema
// newer than its migrations starts when its own last migration is not
// older, and refuses to start otherwise (SchemaNewerError).
const CompatTable = "lockworker_schema_compat"

// MigrationLockTimeout is Config.MigrationLockTimeout's default, the
// lock_timeout of each migration's transaction. ALTER TABLE takes ACCESS
// EXCLUSIVE, which waits for every transaction that touched the table (an
// older replica's, a long query, pg_dump) and, while it waits, queues every
// later transaction on the table behind it: an unbounded wait stops the
// whole service, older replicas included. lock_timeout bounds each lock
// WAIT, not the migration: each statement that needs a lock the migration
// does not hold yet waits up to 5 s, and the tables it locked already stay
// locked meanwhile, so a table locked early in a migration is blocked for up
// to 5 s per wait from its own on (010: lock_holders up to 15 s,
// lock_waiters 10 s, locks 5 s; README "Upgrading" lists each migration),
// plus the time the statements run. Each wait is within the client's
// default RequestTimeout (30 s), so commands are delayed, not failed (a
// lease or session whose TTL is shorter than the stall may expire
// meanwhile, as in any stall of PostgreSQL), and 5 s is long enough for the
// worker's own transactions, which last milliseconds, to drain. A
// migration that times out fails with 55P03 (a *MigrationLockError) and,
// under Config.RetryStart, is retried after at least this long, or as long
// as its failed transaction took (lockErrorBackoff), the others'
// transactions running meanwhile. Locking tables in another order than a
// worker's transaction does, a migration can deadlock with one (40P01):
// PostgreSQL fails either after deadlock_timeout, and either is retried
// (the worker's transaction by InTx, the migration by the start's retry). It bounds the waits only: a
// migration that has its locks runs as long as its statements need.
const MigrationLockTimeout = 5 * time.Second

// ternLockNum is tern's advisory lock (its migrate.go, lockNum), one for
// the whole database.
const ternLockNum = int64(9628173550095224)

// lockTimedOutChannel is the NOTIFY channel on which a migration that timed
// out on a table's lock tells it, before it releases tern's lock: the
// payload is the schema (current_schema()), a newline and the migration.
// A replica that waited for tern's lock behind it, retrying its start,
// backs off instead of starting another attempt at once.
const lockTimedOutChannel = "lockworker_migration_lock_timed_out"

// MigrateEvents tells what Migrate does, for logs. Each func may be nil.
type MigrateEvents struct {
	// Pending is told when the schema, at version from, is behind this
	// binary's last migration, to, before Migrate takes the migration lock.
	Pending func(from, to int)
	// WaitingForLock is told when another session holds the migration
	// lock (tern's advisory lock, one for the whole database: another
	// replica migrating this schema, or a migration of another schema),
	// before Migrate waits for it.
	WaitingForLock func()
	// Started is told as each migration starts, inside its transaction.
	Started func(name string)
	// Applied is told of each migration committed, with how long it took.
	Applied func(name string, took time.Duration)
	// Newer is told when the schema, at version, is newer than this
	// binary's last migration, latest, and its migrations declared
	// binaries from oldestReader on compatible (CompatTable): Migrate
	// leaves it as is and succeeds.
	Newer func(version, latest, oldestReader int)
}

// MigrationLockError is a migration that waited MigrationLockTimeout for
// a lock on a table it changes (SQLSTATE 55P03, lock_not_available):
// another transaction holds one. A start retries it (startRetryable).
// With Behind set, it is not this attempt's: this one waited for tern's
// lock while another session's attempt at Migration, on this schema, failed
// so, and gave up without trying, rather than stall the tables again at
// once (under Config.RetryStart only).
type MigrationLockError struct {
	Migration string
	Timeout   time.Duration
	Took      time.Duration // the failed transaction's; when Behind, this attempt's wait for it
	Behind    bool
	Err       error // tern's, wrapping the *pgconn.PgError; nil when Behind
}

func (e *MigrationLockError) Error() string {
	if e.Behind {
		return fmt.Sprintf("migration %s: another session's attempt at it, which held the migration lock, timed out on a lock on a table it changes: "+
			"another transaction holds a lock on it (an older replica's, a long query or a backup); backing off before trying", e.Migration)
	}
	return fmt.Sprintf("migration %s waited %v for a lock on a table it changes: another transaction holds a lock on it "+
		"(an older replica's, a long query or a backup): %v", e.Migration, e.Timeout, e.Err)
}

func (e *MigrationLockError) Unwrap() error { return e.Err }

// latest is this binary's last migration's number, the schema version its
// migrations reach: tern numbers the files 1, 2, ... without gaps, and
// refuses them otherwise.
var latest = func() int {
	files, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil { // only for a malformed pattern
		panic(err)
	}
	return len(files)
}()

// LatestVersion is the schema version this binary's migrations reach (its
// last migration's number): what Migrate brings an older schema to, and
// the version CompatTable's oldest_reader is compared with.
func LatestVersion() int { return latest }

// Migrate applies every pending migration. tern holds a PostgreSQL advisory
// lock while it migrates, so workers starting at once apply each file once.
// That lock is one for the whole database, whatever the schema: a schema
// already at the last migration is left alone without it, so a replica
// restarting does not wait behind another schema's migration. With
// Config.RetryStart, a transient failure is retried (each migration is a
// transaction of its own, and the lock goes with the connection), and so is
// a migration that waited MigrationLockTimeout for a table's lock. A schema
// newer than this binary's migrations is refused (ErrSchemaNewer), never
// retried, unless its migrations declared this binary's compatible
// (CompatTable).
func (s *Store) Migrate(ctx context.Context) error { return s.MigrateWith(ctx, MigrateEvents{}) }

// MigrateWith is Migrate telling ev of its steps.
func (s *Store) MigrateWith(ctx context.Context, ev MigrateEvents) error {
	try := func() error { return translateStart(ctx, s.migrate(ctx, ev)) }
	if s.cfg.RetryStart {
		return retryAtLeast(ctx, s.cfg, s.cfg.OnStartRetry, s.lockErrorBackoff, try)
	}
	return try()
}

// lockErrorBackoff is the least wait after err: after a
// *MigrationLockError, as long as the failed migration's transaction took,
// and never less than its lock_timeout, plus up to a fifth more (jitter, so
// that replicas retrying together drift apart). The attempt stalled the
// tables it waited for, and those it had locked already, for up to that
// long (5 s per lock it waited for); waiting at least as long before the
// next leaves the others' transactions on them at least about half the time
// while a long transaction (pg_dump, a long query) holds one, instead of
// the start's backoff of 100 ms doubling. 0 for any other err.
func (s *Store) lockErrorBackoff(err error) time.Duration {
	var lockErr *MigrationLockError
	if !errors.As(err, &lockErr) {
		return 0
	}
	d := max(lockErr.Timeout, lockErr.Took)
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}

// migrate is Migrate's one attempt. Its errors are pgx's and tern's
// wrapped, not translated: Migrate translates them once.
func (s *Store) migrate(ctx context.Context, ev MigrateEvents) error {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	last := latest
	schema, err := currentSchema(ctx, conn.Conn())
	if err != nil {
		conn.Release()
		return fmt.Errorf("migrating: %w", err)
	}
	var version int
	err = conn.QueryRow(ctx, "SELECT version FROM "+schema+"."+VersionTable).Scan(&version)
	switch pgErr, _ := errors.AsType[*pgconn.PgError](err); {
	case err == nil:
		if version == last {
			conn.Release()
			return nil
		}
		if version > last {
			err := newerSchema(ctx, conn.Conn(), ev, schema, version, last)
			conn.Release()
			if err != nil && !errors.Is(err, ErrSchemaNewer) {
				err = fmt.Errorf("migrating: %w", err)
			}
			return err
		}
	case pgErr != nil && pgErr.Code == "42P01": // undefined_table
		// No version table yet: a new database, at version 0, unless a
		// lockworker schema is further along the search_path.
		if err := refuseShadowed(ctx, conn.Conn(), schema); err != nil {
			conn.Release()
			return err
		}
	default:
		// Not an answer about the schema (a lost connection, a stop):
		// no "schema is behind" for it.
		conn.Release()
		return fmt.Errorf("migrating: reading the schema version: %w", err)
	}
	if ev.Pending != nil {
		ev.Pending(version, last)
	}
	// The pool's bounds but lock_timeout, the migration's own.
	var bounds []setting
	for _, b := range boundSettings(s.cfg) {
		if b.name != "lock_timeout" {
			bounds = append(bounds, b)
		}
	}
	err = runMigrations(ctx, conn.Conn(), ev, schema, last, s.cfg.MigrationLockTimeout, bounds, s.cfg.RetryStart)
	// tern ends each migration with RESET ALL, which undoes AfterConnect
	// (plan_cache_mode, see sessionSettings): the connection it ran on
	// is closed, whether it succeeded or failed, never returned to the pool
	// for a retry that finds the schema complete, or the worker's
	// transactions, to take. The pool opens a new one, set up. Closing it
	// also releases the advisory lock runMigrations took.
	_ = conn.Hijack().Close(ctx)
	return err
}

// currentSchema is conn's current_schema(), quoted as need be, which
// Migrate qualifies its tables' names with: unqualified, a search_path
// such as "mine,other" would find another deployment's version table in
// "other" while "mine" has none, and take this schema for migrated, its
// statements then running on the other's tables. tern, given
// schema.table, looks for its table in that schema alone (one whose name
// needs quotes it does not find, and creates it if not exists, which
// leaves an existing one as is).
func currentSchema(ctx context.Context, conn *pgx.Conn) (string, error) {
	var schema *string
	var path string
	if err := conn.QueryRow(ctx, "SELECT quote_ident(current_schema()), current_setting('search_path')").Scan(&schema, &path); err != nil {
		return "", fmt.Errorf("reading the current schema: %w", err)
	}
	if schema == nil {
		return "", fmt.Errorf("the search_path (%s) names no schema that exists: no schema to migrate", path)
	}
	return *schema, nil
}

// refuseShadowed refuses to migrate schema, which has no version table,
// when another schema of the search_path has one: either this
// deployment's tables live there (the default "$user", public, after a
// schema named after the role was created, empty), and migrating would give
// it a new empty schema, forgetting its offsets, locks and outcomes; or
// they are another deployment's, which this one's unqualified statements
// would read wherever its own schema lacks a table. Which one it is, only
// the operator knows.
func refuseShadowed(ctx context.Context, conn *pgx.Conn, schema string) error {
	var other string
	err := conn.QueryRow(ctx, `SELECT quote_ident(p.nspname) FROM unnest(current_schemas(false)) WITH ORDINALITY AS p(nspname, i)
		JOIN pg_namespace n ON n.nspname = p.nspname
		JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = $1
		WHERE p.nspname <> current_schema() ORDER BY p.i LIMIT 1`, VersionTable).Scan(&other)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil
	case err != nil:
		return fmt.Errorf("migrating: looking for lockworker schemas on the search_path: %w", err)
	}
	return fmt.Errorf("migrating: schema %s, the first of the search_path that exists, has no lockworker tables, but schema %s further along it has: "+
		"not creating new empty tables in %s, which would forget the locks, offsets and outcomes kept in %s if they are this deployment's. "+
		"Set the search_path to the one schema this deployment uses, %s to go on with those tables (search_path=%s in DATABASE_URL, or ALTER ROLE ... SET search_path = %s, which works with POSTGRES_* and behind pgbouncer; a new deployment's own schema alone otherwise), or drop schema %s if it was created by mistake",
		schema, other, schema, other, other, other, other, schema)
}

// CheckSchema tells whether this binary may still run on the schema, by
// the rule Migrate applies at start (newerSchema): nil while the schema is
// at this binary's last migration, or newer with its migrations allowing
// this binary's version; a *SchemaNewerError (ErrSchemaNewer) once a newer
// binary's migration, applied while this one runs (the first replica of a
// rolling update), declared it unable to run beside the new schema. Any
// other error is a check that could not be made (PostgreSQL unreachable, a
// lock_timeout), not an answer: the caller checks again later. Two round
// trips while the schema is this binary's (its name, the one-row version
// table), a third once it is newer (CompatTable's one row).
func (s *Store) CheckSchema(ctx context.Context) error {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("checking the schema version: %w", err)
	}
	defer conn.Release()
	schema, err := currentSchema(ctx, conn.Conn())
	if err != nil {
		return fmt.Errorf("checking the schema version: %w", err)
	}
	var version int
	if err := conn.QueryRow(ctx, "SELECT version FROM "+schema+"."+VersionTable).Scan(&version); err != nil {
		return fmt.Errorf("checking the schema version: %w", err)
	}
	if version <= latest {
		return nil
	}
	err = newerSchema(ctx, conn.Conn(), MigrateEvents{}, schema, version, latest)
	if err != nil && !errors.Is(err, ErrSchemaNewer) {
		err = fmt.Errorf("checking the schema version: %w", err)
	}
	return err
}

// newerSchema is Migrate's answer to schema at version, newer than this
// binary's last migration, and CheckSchema's: nil, told to ev.Newer, when
// CompatTable allows binaries of last; a *SchemaNewerError when it does
// not, or is missing (a schema migrated by hand, or not by lockworker).
func newerSchema(ctx context.Context, conn *pgx.Conn, ev MigrateEvents, schema string, version, last int) error {
	var oldest int
	err := conn.QueryRow(ctx, "SELECT oldest_reader FROM "+schema+"."+CompatTable).Scan(&oldest)
	switch pgErr, _ := errors.AsType[*pgconn.PgError](err); {
	case err == nil && oldest <= last:
		if ev.Newer != nil {
			ev.Newer(version, last, oldest)
		}
		return nil
	case err == nil:
		return &SchemaNewerError{Version: version, Latest: last, OldestReader: oldest}
	case errors.Is(err, pgx.ErrNoRows), pgErr != nil && pgErr.Code == "42P01": // undefined_table
		return &SchemaNewerError{Version: version, Latest: last}
	default:
		return fmt.Errorf("reading which binaries the schema allows: %w", err)
	}
}

// runMigrations applies the pending migrations on conn with tern, schema
// being the current one (currentSchema), last the number of migration
// files, each with lock_timeout timeout and bounds, the pool's settings
// (boundSettings) that tern's RESET ALL undoes. retrying says a failure is
// retried (Config.RetryStart).
func runMigrations(ctx context.Context, conn *pgx.Conn, ev MigrateEvents, schema string, last int, timeout time.Duration, bounds []setting, retrying bool) error {
	// tern's lock, taken here first (session advisory locks stack: tern's
	// own lock and unlock leave this one held until conn closes) so that a
	// wait for another session's migration is told. That wait is not
	// bounded but by ctx: the holder's lock waits are (lock_timeout), and a
	// replica of this version releases the lock between attempts (so the
	// pool's lock_timeout, Config.LockTimeout, is lifted for this
	// connection, which is closed after, and a statement_timeout the
	// server, database or role sets, which would fail the start with
	// 57014). Listening first, so that a holder's failure on a table's
	// lock is heard.
	table := schema + "." + VersionTable
	// The migration's own timeouts, whatever the connection string says:
	// its lock_timeout, and statement_timeout and transaction_timeout
	// lifted, statement_timeout first (liftStatementTimeout): after tern's
	// RESET ALL the server's, database's or role's applies again.
	own := func(lockTimeout time.Duration, local bool) string {
		lock := setting{"lock_timeout", strconv.FormatInt(lockTimeout.Milliseconds(), 10)}
		return liftStatementTimeout(local) + "; " + setSQL(append([]setting{lock}, liftedTimeouts...), local, true)
	}
	if _, err := conn.Exec(ctx, own(0, false)); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if retrying {
		if _, err := conn.Exec(ctx, "LISTEN "+lockTimedOutChannel); err != nil {
			return fmt.Errorf("migrating: %w", err)
		}
	}
	var free bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", ternLockNum).Scan(&free); err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if !free {
		if ev.WaitingForLock != nil {
			ev.WaitingForLock()
		}
		waitBegan := time.Now()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", ternLockNum); err != nil {
			return fmt.Errorf("migrating: waiting for the migration lock: %w", err)
		}
		if retrying {
			failed, err := timedOutBefore(ctx, conn)
			if err != nil {
				return fmt.Errorf("migrating: %w", err)
			}
			// Another session's success after that failure leaves
			// nothing to back off from.
			var version int
			if failed != "" && (conn.QueryRow(ctx, "SELECT version FROM "+table).Scan(&version) != nil || version < last) {
				// The wait overlapped the failed attempt: its Took.
				return &MigrationLockError{Migration: failed, Timeout: timeout, Took: time.Since(waitBegan), Behind: true}
			}
		}
	}
	m, err := migrate.NewMigrator(ctx, conn, table)
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	if err := m.LoadMigrations(migrations.FS); err != nil {
		return fmt.Errorf("loading migrations: %w", err)
	}
	var (
		current string    // the migration running
		began   time.Time // when it started
		setErr  error     // SET LOCAL's failure, which aborted the migration's transaction
	)
	// tern calls OnStart after BEGIN of the migration's transaction (its
	// MigrateTo), so SET LOCAL holds for that migration and ends with it;
	// the migration before it has committed by then, its RESET ALL having
	// undone the SETs above and the pool's. No statement_timeout, whatever
	// the server, database or role sets: an index build over a large table
	// would fail with 57014 at every start. (tern's version update and
	// COMMIT, after its RESET ALL, run under that setting: short
	// statements.) The pool's bounds are set again, as session SETs (kept
	// past COMMIT until the next RESET ALL), but for those the
	// connection's startup parameters set, which RESET ALL put back
	// (setSQL, as for the pool), so that PostgreSQL ends the
	// session of a replica frozen or cut off in a migration, releasing its
	// ACCESS EXCLUSIVE locks: from a run's second migration on, the
	// server's defaults (no idle-in-transaction timeout, hours of
	// keepalives) would hold the tables as long. Left unbounded: tern's two
	// round trips after its RESET ALL, and the idle time between
	// migrations, which holds tern's lock only.
	set := own(timeout, true)
	if again := setSQL(bounds, false, false); again != "" {
		set += "; " + again
	}
	m.OnStart = func(_ int32, name, _, _ string) {
		now := time.Now()
		if current != "" && ev.Applied != nil {
			ev.Applied(current, now.Sub(began))
		}
		current, began = name, now
		if _, err := conn.Exec(ctx, set); err != nil && setErr == nil {
			setErr = err
		}
		if ev.Started != nil {
			ev.Started(name)
		}
	}
	err = m.Migrate(ctx)
	switch {
	case setErr != nil:
		return fmt.Errorf("migrating: setting the timeouts for %s: %w", current, setErr)
	case err == nil:
		if current != "" && ev.Applied != nil {
			ev.Applied(current, time.Since(began))
		}
		return nil
	}
	if lockTimedOut(err) && current != "" {
		// Told before tern's lock goes with conn; tern rolled the
		// migration back. A failure to tell leaves the waiters to try.
		_, _ = conn.Exec(ctx, "SELECT pg_notify($1, current_schema() || E'\\n' || $2)", lockTimedOutChannel, current)
		return &MigrationLockError{Migration: current, Timeout: timeout, Took: time.Since(began), Err: err}
	}
	var badVersion migrate.BadVersionError
	if errors.As(err, &badVersion) {
		// Migrated further by a newer binary since the check in migrate.
		var version int
		if conn.QueryRow(ctx, "SELECT version FROM "+table).Scan(&version) == nil && version > last {
			return newerSchema(ctx, conn, ev, schema, version, last)
		}
	}
	return fmt.Errorf("migrating: %w", err)
}

// timedOutBefore is the migration that another session's attempt on this
// schema timed out on a table's lock while conn, listening, waited for
// tern's lock, or "". The backend sends the notifications it queued while
// conn waited as it goes idle after the wait, before it reads the next
// query: the one here reads them. One sent too late for it is missed, and
// the caller tries the migration, as without this.
func timedOutBefore(ctx context.Context, conn *pgx.Conn) (string, error) {
	var schema string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return "", err
	}
	done, cancel := context.WithCancel(ctx)
	cancel() // only the notifications already read: pgx returns them without reading conn
	failed := ""
	for {
		n, err := conn.WaitForNotification(done)
		if err != nil {
			return failed, nil
		}
		if n.Channel != lockTimedOutChannel {
			continue
		}
		if s, migration, ok := strings.Cut(n.Payload, "\n"); ok && s == schema {
			failed = migration
		}
	}
}
