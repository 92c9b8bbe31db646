package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults of Config's retry policy.
const (
	// DefaultRetryBase is the original node's ACQUIRE_RETRY_DELAY.
	DefaultRetryBase = 100 * time.Millisecond
	DefaultRetryMax  = 5 * time.Second
)

// Config says how to reach PostgreSQL and how to retry.
type Config struct {
	// URL is a libpq connection string or URL. Required.
	URL string
	// MinConns is the connections the pool keeps open even when idle
	// (POSTGRES_MIN_CONNECTIONS); 0, the default, keeps none.
	MinConns int32
	// MaxConns bounds the pool. Default 10.
	MaxConns int32
	// RetryBase is the first retry delay of a transient failure; each retry
	// doubles it, with jitter, up to RetryMax, except after a lock wait
	// that LockTimeout ended, always retried after RetryBase. Defaults
	// DefaultRetryBase (100 ms) and DefaultRetryMax (5 s).
	RetryBase, RetryMax time.Duration
	// OnRetry, when set, is told of every retry (for logs and metrics).
	OnRetry func(attempt int, err error, delay time.Duration)
	// RetryStart makes Open and Migrate retry a failed start with the
	// retry policy above until they succeed or ctx is done, instead of
	// failing at the first: a service started during a failover waits for
	// the server. The start is retried unless every attempt of the
	// connection (each host, address and, under sslmode prefer or allow,
	// with and without TLS) failed for a reason no wait cures: the role or
	// its password refused (ErrAccessDenied), the database missing and not
	// creatable (ErrNoDatabase), the database not encoded in UTF8
	// (ErrDatabaseEncoding), the server's certificate not verifying,
	// the server refusing TLS under sslmode require or verify-*, a TLS
	// alert from the server, a failed sslcertmode, require_auth or
	// channel_binding check of pgx; an invalid URL fails at once too.
	// Anything else is retried, each attempt told to OnStartRetry with its
	// error: PostgreSQL unreachable, refusing or resetting connections,
	// not answering within connect_timeout, starting up or shutting down,
	// but also a misspelt host (DNS), a failed check this list does not
	// recognise, "server protocol version too low", GSS (see
	// startRetryable and pgconnSetupErrors).
	RetryStart bool
	// OnStartRetry, when set, is told of each of those retries.
	OnStartRetry func(attempt int, err error, delay time.Duration)
	// ConnectTimeout bounds each connection the pool makes, at the start
	// and after it, when the URL sets no connect_timeout (or sets 0, which
	// pgx does not tell from none), and the settings' statement each new
	// connection then runs (sessionSettings) whatever the URL sets. A server that accepts
	// connections and never answers them (keepalives are answered, so TCP
	// never gives up) would otherwise hold the start in its first attempt,
	// untold, and at run time hold a pool slot per connection attempt for
	// pgxpool's 2 minutes per address (and its SET until TCP gives up),
	// long after the server answers again. A start's attempt that ends so
	// is told to OnStartRetry and retried. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// MigrationLockTimeout is the lock_timeout of each migration's
	// transaction (Migrate): how long each of its statements waits for a
	// lock on a table another transaction holds before the migration fails
	// with a *MigrationLockError; under RetryStart, the next attempt comes
	// at least this long after, or as long as the failed migration's
	// transaction took (and up to a fifth more), whatever the backoff
	// above. Default MigrationLockTimeout (5 s).
	MigrationLockTimeout time.Duration
	// AttemptTimeout bounds each attempt of a transaction (InTx,
	// InTxBatch), from asking the pool for a connection to COMMIT's
	// answer, whatever context the statements run under. An attempt still
	// running then has its connection closed and is retried as a
	// transient failure. A retry of the same transaction gets twice the
	// bound of the attempt before when its statements outlasted it (not
	// when it only waited for a connection), up to 64 times AttemptTimeout,
	// so a transaction that needs longer than the first bound still
	// commits; one that needs longer than 64 times it never does, far
	// beyond any of the worker's. (So the connections lift the
	// statement_timeout, and PostgreSQL 17's transaction_timeout, that
	// the server, database or role sets: see sessionSettings. One the
	// connection string gives is kept, and a statement that outlasts it
	// fails with 57014, which is not retried.) Without it, a connection
	// that stops answering mid-transaction (the server's host gone after a
	// failover, which Linux retransmits to for about 15 minutes before TCP
	// gives up; a server or proxy that hangs) would hold the transaction's
	// caller until TCP gives up: the worker's applier, with every partition
	// it applies, while the replica still looks alive to Kafka. Default
	// DefaultAttemptTimeout (15 s); negative: no bound.
	AttemptTimeout time.Duration
	// IdleInTransactionTimeout is the connections'
	// idle_in_transaction_session_timeout: PostgreSQL ends a transaction
	// of one of them that waits this long for its client's next statement,
	// releasing its row locks. A replica frozen (a paused VM or container,
	// SIGSTOP) or cut off from PostgreSQL in the middle of a transaction
	// would otherwise keep the locks of its partitions' offset and lock
	// rows for as long as it stays so (a frozen process's kernel still
	// answers TCP keepalives; a paused VM or a cut-off host only until
	// ClientGoneTimeout), and the replica given its partitions would
	// wait on them. Below the session timeout of Kafka's group (6 s by
	// default), the rows are free by the time the partitions move. Most of
	// the worker's transactions wait on their client between statements
	// only for its next round trip, and after a partition's assignment for
	// Kafka's answer about reply topics not seen before (2 s at most, the
	// worker's openLookups); but one that ends thousands of leases (a
	// session_close, a cleanup command) builds their events after its last
	// lock statement, seconds of idling on a busy machine. So a retry of a
	// transaction that PostgreSQL ended for idling (25P03, or its
	// connection lost after it ran at least the limit) sets twice the
	// limit of the attempt before for its own transaction, up to 64 times
	// this one, as AttemptTimeout grows; the others send nothing more.
	// Default DefaultIdleInTransactionTimeout (5 s); negative: the
	// server's setting, never grown. One given in the connection string
	// wins, the retries' too.
	IdleInTransactionTimeout time.Duration
	// LockTimeout is the connections' lock_timeout: a statement that waits
	// this long for a lock another transaction holds fails (SQLSTATE 55P03,
	// a Conflict, retried like a deadlock but always after RetryBase, not a
	// growing backoff: the attempt waited already), and its transaction,
	// aborted, releases every lock it held. The bound is for a frozen
	// replica, whose statements the server runs on while it cannot answer:
	// one of them waiting on a row that another of its transactions holds,
	// idle, would otherwise get the row when IdleInTransactionTimeout ends
	// that transaction, and only then start its own idle clock, holding its
	// rows (and the one it waited for) twice as long, past the move of the
	// partitions. The holder went idle at most the longest a live
	// transaction of the worker stays idle (openLookups, 2 s) before the
	// wait began, so while LockTimeout plus that is below
	// IdleInTransactionTimeout the wait gives up first, and the rows are
	// free IdleInTransactionTimeout after the freeze. (A holder that
	// commits within LockTimeout instead hands the row over: free by
	// LockTimeout plus IdleInTransactionTimeout.) Above deadlock_timeout
	// (PostgreSQL's default 1 s), so that a deadlock is still found and
	// reported as one, and an autovacuum in a statement's way cancelled,
	// before the wait gives up. A live replica waits that long only while
	// PostgreSQL holds a COMMIT (a synchronous standby, a stalled disk) or
	// a batch runs for seconds: its transactions retry in pieces of
	// LockTimeout. Default DefaultLockTimeout (2 s); negative: the server's
	// setting. One given in the connection string wins, but Migrate sets
	// its own (MigrationLockTimeout, and none for the wait for another
	// session's migration).
	LockTimeout time.Duration
	// ClientGoneTimeout is about how long PostgreSQL keeps a session whose
	// client's host stopped answering without closing its connections (a
	// power loss, a network partition that drops packets): server-side
	// TCP keepalives (tcp_keepalives_idle a third of it,
	// tcp_keepalives_interval a sixth, tcp_keepalives_count 3) for an idle
	// connection, tcp_user_timeout (which Linux also applies to the
	// keepalives) for one whose answer goes unacknowledged. Without them
	// the server keeps such a session for hours (the system's keepalive,
	// about 2 h, for an idle one; its retransmissions, about 15 minutes,
	// for one it is answering), holding a connection slot, and the vacuum
	// loop's session lock (the other replicas skip their passes
	// meanwhile). A frozen replica's kernel still acknowledges, so it keeps
	// its sessions, unless the server's answers fill its receive window
	// for as long (a recent Linux then ends the connection too), or a paused VM's
	// kernel is frozen with it: its transactions then fail as on a lost
	// connection, and are retried. The pool's connections only, over TCP,
	// and only as far as the server's peer: behind a proxy or pgbouncer
	// the proxy's own settings decide. Whole seconds of 3 s or more make
	// sense. Default DefaultClientGoneTimeout (30 s); negative: the
	// server's settings. A setting given in the connection string wins.
	ClientGoneTimeout time.Duration
	// Tracer, when set, is told of every statement of the pool, beside the
	// store's own tracer (a statement refused as read-only resets the
	// pool: readOnlyReset). Default none.
	Tracer pgx.QueryTracer
}

// Defaults of Config's bounds.
const (
	DefaultConnectTimeout           = 10 * time.Second
	DefaultAttemptTimeout           = 15 * time.Second
	DefaultIdleInTransactionTimeout = 5 * time.Second
	DefaultLockTimeout              = 2 * time.Second
	DefaultClientGoneTimeout        = 30 * time.Second
	DefaultPingTimeout              = 5 * time.Second
)

// Store is a pool plus the retry policy.
type Store struct {
	Pool  *pgxpool.Pool
	cfg   Config
	probe probe
	// eventsFloor is where Prune's walk of the history starts, in Unix
	// microseconds (pruneEventsSQL, eventsSlack).
	eventsFloor atomic.Int64
}

// Open connects to PostgreSQL. When the database does not exist and the user
// may create it, it is created; otherwise the error is ErrNoDatabase (and
// ErrAccessDenied when the user may not create it). A role that cannot log in
// gives ErrAccessDenied, a database not encoded in UTF8 ErrDatabaseEncoding
// (a *DatabaseEncodingError). With cfg.RetryStart, transient failures are
// retried.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 10
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = DefaultRetryMax
	}
	if cfg.MigrationLockTimeout <= 0 {
		cfg.MigrationLockTimeout = MigrationLockTimeout
	}
	if cfg.AttemptTimeout == 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.IdleInTransactionTimeout == 0 {
		cfg.IdleInTransactionTimeout = DefaultIdleInTransactionTimeout
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.ClientGoneTimeout == 0 {
		cfg.ClientGoneTimeout = DefaultClientGoneTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, connStringError(err)
	}
	pcfg.MinConns, pcfg.MaxConns = cfg.MinConns, cfg.MaxConns
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	}
	pcfg.AfterConnect = sessionSettings(cfg, pcfg.ConnConfig.RuntimeParams, pcfg.ConnConfig.ConnectTimeout)
	reset := &readOnlyReset{}
	pcfg.ConnConfig.Tracer = reset
	if cfg.Tracer != nil {
		pcfg.ConnConfig.Tracer = multitracer.New(reset, cfg.Tracer)
	}
	if pcfg.PingTimeout <= 0 {
		// The pool pings a connection idle for over a second before
		// handing it out; without a bound, one whose server's host is
		// gone holds the caller until TCP gives up. A positive
		// pool_ping_timeout in the connection string wins.
		pcfg.PingTimeout = DefaultPingTimeout
	}
	s := &Store{cfg: cfg}
	try := func() (err error) {
		s.Pool, err = s.connect(ctx, pcfg)
		reset.pool.Store(s.Pool)
		return translateStart(ctx, err)
	}
	if cfg.RetryStart {
		err = retry(ctx, cfg, cfg.OnStartRetry, try)
	} else {
		err = try()
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// connStringError is the error of Open for err, pgx's refusal of the
// connection string: ErrConnString, with the file pgx could not read
// (sslrootcert, sslcert, sslkey) when that is why. Nothing else of err is
// told: a *pgconn.ParseConfigError's text quotes the connection string,
// password included when pgx's best-effort redaction misses it. Its inner
// error does not: pgx builds it from the setting's value alone ("unable to
// read CA file: open <sslrootcert>: no such file or directory").
func connStringError(err error) error {
	var pathErr *fs.PathError
	if errors.As(err, &pathErr) {
		var parseErr *pgconn.ParseConfigError
		if errors.As(err, &parseErr) && parseErr.Unwrap() != nil {
			return fmt.Errorf("%w: %w", ErrConnString, parseErr.Unwrap())
		}
	}
	return fmt.Errorf("%w: invalid format", ErrConnString)
}

// connect creates the database if need be (ensureDatabase) and returns a
// pool that reached it, refusing a database not encoded in UTF8
// (DatabaseEncodingError) before any statement of lockworker's runs there.
// Its errors are pgx's wrapped, not translated: Open translates them once
// (translateStart, which sees through the wrapping).
func (s *Store) connect(ctx context.Context, pcfg *pgxpool.Config) (*pgxpool.Pool, error) {
	if err := ensureDatabase(ctx, pcfg.ConnConfig); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL pool: %w", err)
	}
	var database, encoding string
	if err := pool.QueryRow(ctx, "SELECT current_database(), current_setting('server_encoding')").Scan(&database, &encoding); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connecting to PostgreSQL at %s:%d as %s: %w", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.User, err)
	}
	if encoding != "UTF8" {
		pool.Close()
		return nil, &DatabaseEncodingError{Database: database, Encoding: encoding}
	}
	return pool, nil
}

// sessionSettings is the pool's AfterConnect: it sets on each connection,
// in one round trip (setSQL), what the connection string does not (given
// there, it is sent at startup instead, which pgbouncer refuses, or with
// ignore_startup_parameters drops), and textFormat whatever it says:
//
//   - plan_cache_mode force_generic_plan: each prepared statement is
//     planned once. Under auto PostgreSQL re-plans the set-based statements
//     on every execution, a large share of its CPU at small batches
//     (docs/performance.md). So every statement must read by index under
//     its generic plan.
//   - jit off: a generic plan is costed for rows it never reads (a
//     subquery its CASE skips, priced once per row of a table's average
//     lock), and a cost above jit_above_cost has every run of the cached
//     plan compiled, 0.1 to 1.2 s each, on statements that take a
//     millisecond.
//   - idle_in_transaction_session_timeout: Config.IdleInTransactionTimeout.
//   - lock_timeout: Config.LockTimeout.
//   - tcp_keepalives_idle, tcp_keepalives_interval, tcp_keepalives_count
//     and tcp_user_timeout: Config.ClientGoneTimeout.
//   - statement_timeout and transaction_timeout 0 (liftedTimeouts): the
//     server's, database's or role's lifted, as Migrate lifts them;
//     statement_timeout first of all (liftStatementTimeout) unless the
//     startup parameters may set it.
//   - DateStyle, IntervalStyle, bytea_output, standard_conforming_strings
//     and client_encoding: textFormat.
//
// The SET is bounded by bound, the connection's connect timeout: the pool
// runs it under a context only Close ends, so a server that stops
// answering right after the connection opened would hold it, and its pool
// slot, until TCP gives up.
//
// startup are the connection's startup parameters (pgx's RuntimeParams).
func sessionSettings(cfg Config, startup map[string]string, bound time.Duration) func(context.Context, *pgx.Conn) error {
	settings := append([]setting{{"plan_cache_mode", "force_generic_plan"}, {"jit", "off"}}, boundSettings(cfg)...)
	sql := setSQL(append(settings, liftedTimeouts...), false, false) + "; " + setSQL(textFormat, false, true)
	if !mayGiveStatementTimeout(startup) {
		sql = liftStatementTimeout(false) + "; " + sql
	}
	return func(ctx context.Context, c *pgx.Conn) error {
		sctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		_, err := c.Exec(sctx, sql)
		if err != nil && ctx.Err() == nil && sctx.Err() != nil {
			// %v: the deadline is the bound's, which transient would
			// take for a caller's.
			return fmt.Errorf("%w (%s): %v", errSetupTimedOut, bound, err)
		}
		return err
	}
}

// setting is one of the settings setSQL sets: value in the setting's
// unit, as SET takes it. Names and values are this package's own, none
// with a quote.
type setting struct {
	name, value string
}

// setSQL is one statement that sets each of settings (set_config: for the
// transaction when local, else the session) that the server has, leaving
// out those it lacks (transaction_timeout before PostgreSQL 17, whatever
// server_version a proxy reports), and, unless overStartup, those the
// connection's startup parameters set (source client in pg_settings; RESET
// ALL returns to them): the connection string's, as parameters of their
// own or in options. The server says which those are: it alone knows
// what its options parser took (an argument of -D is no setting; -ec
// lock_timeout=7 is one) and what a proxy in the way dropped (pgbouncer's
// ignore_startup_parameters). A server, database or role setting
// (source configuration file, database, user, ...) is overridden. "" when
// settings is empty.
func setSQL(settings []setting, local, overStartup bool) string {
	if len(settings) == 0 {
		return ""
	}
	rows := make([]string, len(settings))
	for i, s := range settings {
		rows[i] = fmt.Sprintf("('%s', '%s')", s.name, s.value)
	}
	sql := fmt.Sprintf("SELECT pg_catalog.set_config(name, v.value, %t) FROM (VALUES %s) v(name, value) JOIN pg_catalog.pg_settings USING (name)",
		local, strings.Join(rows, ", "))
	if !overStartup {
		sql += " WHERE source <> 'client'"
	}
	return sql
}

// boundSettings are the settings of Config's bounds that the pool's
// connections get (sessionSettings), those whose bound is not negative
// (the server's setting). Migrate sets them again as each migration
// starts, after tern's RESET ALL (runMigrations).
func boundSettings(cfg Config) []setting {
	var out []setting
	add := func(name string, value int64) {
		if value > 0 {
			out = append(out, setting{name, strconv.FormatInt(value, 10)})
		}
	}
	add("idle_in_transaction_session_timeout", cfg.IdleInTransactionTimeout.Milliseconds())
	add("lock_timeout", cfg.LockTimeout.Milliseconds())
	if gone := cfg.ClientGoneTimeout; gone > 0 {
		add("tcp_keepalives_idle", max(int64(gone/3/time.Second), 1)) // seconds
		add("tcp_keepalives_interval", max(int64(gone/6/time.Second), 1))
		add("tcp_keepalives_count", 3)
		add("tcp_user_timeout", gone.Milliseconds())
	}
	return out
}

// liftedTimeouts are the settings, each 0 (none), that lift the timeouts
// a server, database or role may set, which would end what has bounds of
// its own (a transaction's attempt, Config.AttemptTimeout; a migration's
// lock waits) with an error no retry follows, however often it recurs:
// statement_timeout (57014), and PostgreSQL 17's transaction_timeout
// (25P04, which also ends the session), which setSQL leaves out where the
// server lacks it.
var liftedTimeouts = []setting{{"statement_timeout", "0"}, {"transaction_timeout", "0"}}

// liftStatementTimeout is a SET of statement_timeout to 0, for the
// transaction when local, sent in the same string before a setSQL
// statement that lifts the timeouts (liftedTimeouts). That statement reads
// pg_settings, some 10 to 40 ms on a new connection (its catalog caches
// cold), under the very statement_timeout it lifts, which a server,
// database or role may set below that: 57014, a start that exits 1, a pool
// that cannot connect. A SET, some 0.1 ms, is neither planned nor reads a
// catalog, and PostgreSQL 13 and later time each statement of a string
// apart, so those after it run without the timeout. setSQL's statement
// still decides, as for the other settings. statement_timeout only: a SET
// of PostgreSQL 17's transaction_timeout fails on an earlier server, and
// server_version does not tell which one answers (a proxy may report its
// own).
func liftStatementTimeout(local bool) string {
	if local {
		return "SET LOCAL statement_timeout = 0"
	}
	return "SET statement_timeout = 0"
}

// mayGiveStatementTimeout reports whether startup, a connection's startup
// parameters, may set statement_timeout: as a parameter of its own, the
// name in any case, or anywhere in options, whose switches PostgreSQL
// parses (-c statement_timeout=..., --statement-timeout=..., backslash
// escapes), any mention counting. Such a connection gets no
// liftStatementTimeout, which would put its value out of setSQL's reach,
// source client no more: one the connection string sets wins.
func mayGiveStatementTimeout(startup map[string]string) bool {
	unescape := strings.NewReplacer("-", "_", `\`, "")
	for name, value := range startup {
		switch strings.ToLower(name) {
		case "statement_timeout":
			return true
		case "options":
			if strings.Contains(strings.ToLower(unescape.Replace(value)), "statement_timeout") {
				return true
			}
		}
	}
	return false
}

// textFormat are the settings pgx needs of the text format: the simple
// protocol's (a cleanup command's statements, handlers' sweepFilter), whose
// results it reads only as the server writes them by default (ISO
// timestamps, postgres intervals, hex bytea), and whose arguments it writes
// into the statement only under standard_conforming_strings and UTF8,
// refusing the statement otherwise. A server's, database's or role's value
// would fail such a statement at every retry (ALTER DATABASE ... SET
// DateStyle = 'SQL, DMY'), and so would the connection string's, which
// these override too: no other value works. (Hence Open refuses a database
// not encoded in UTF8, whose server would convert what is sent:
// ErrDatabaseEncoding.)
var textFormat = []setting{
	{"DateStyle", "ISO"}, {"IntervalStyle", "postgres"}, {"bytea_output", "hex"},
	{"standard_conforming_strings", "on"}, {"client_encoding", "UTF8"},
}

// errSetupTimedOut is the error of a new connection whose settings
// (sessionSettings) were not answered within its connect timeout: a
// failed connection, transient as one that timed out connecting is.
var errSetupTimedOut = errors.New("a new connection's settings were not answered within its connect timeout")

// Close closes the pool and Probe's connection.
func (s *Store) Close() {
	s.Pool.Close()
	s.probe.mu.Lock()
	defer s.probe.mu.Unlock()
	s.probe.closeConn()
	s.probe.closed = true
}

// ensureDatabase creates the configured database when it is missing (SQLSTATE
// 3D000), connecting to the "postgres" maintenance database to do so.
func ensureDatabase(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		return fmt.Errorf("connecting to PostgreSQL at %s:%d as %s: %w", cc.Host, cc.Port, cc.User, err)
	}
	admin := cc.Copy()
	admin.Database = "postgres"
	conn, err = pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("%w: %q, and connecting to database postgres to create it failed: %w", ErrNoDatabase, cc.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var template1 string
	if err := conn.QueryRow(ctx, "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'template1'").Scan(&template1); err != nil {
		return fmt.Errorf("%w: %q, and reading template1's encoding to create it failed: %w", ErrNoDatabase, cc.Database, err)
	}
	if _, err := conn.Exec(ctx, createDatabaseSQL(cc.Database, template1)); err != nil {
		if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") { // created meanwhile by another process
			return nil
		}
		return fmt.Errorf("%w: %q, and creating it failed: %w", ErrNoDatabase, cc.Database, err)
	}
	return nil
}

// createDatabaseSQL creates database name like template1, whose encoding
// is template1: in UTF8 from template0 when that is not UTF8 (a cluster
// made in the C locale has SQL_ASCII), which Open would refuse, with the C
// collation, valid in any cluster's locale.
func createDatabaseSQL(name, template1 string) string {
	sql := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template1 != "UTF8" {
		sql += " TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
	}
	return sql
}

// InTx runs fn in a transaction and commits it. A transient failure (see
// ErrTransient) rolls back and runs the whole of fn again after a backoff, until
// it succeeds or ctx is done; fn must therefore keep no state across calls.
// Any other error rolls back and is returned, translated: errors.Is tells
// ErrInvalidData, ErrConstraint and ErrAccessDenied apart, and errors.As still
// finds the *pgconn.PgError.
//
// A connection lost during COMMIT is retried too, yet that transaction may
// have committed: fn must make a second run of committed work harmless. The
// worker's batches do, by advancing their partition's offset only from the
// offset they expect (ErrOffsetMoved).
func (s *Store) InTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.retryBounded(ctx, func(a *attempt) error { return s.tryTx(ctx, a, fn) })
}

// InTxPausing is InTx whose pause between attempts is at most pause
// (Config.RetryMax's otherwise, 5 s by default), for a caller that must
// see the database's return within about pause. Everything else is as
// InTx's: each attempt's bound doubles after one that outlasted it, and
// each retry is told to Config.OnRetry.
func (s *Store) InTxPausing(ctx context.Context, pause time.Duration, fn func(pgx.Tx) error) error {
	cfg := s.cfg
	cfg.RetryMax = min(cfg.RetryMax, pause)
	return s.retryBoundedBy(ctx, cfg, func(a *attempt) error { return s.tryTx(ctx, a, fn) })
}

// InTxBatch is InTx for a transaction that spends no round trip of its own
// on BEGIN or COMMIT: fn queues its first statements on first and sends it
// through tx before anything else (BEGIN travels with it,
// pgx.Batch.BeginTx), and queues its last statements on last without
// sending them: they travel with COMMIT. A transaction whose fn sends
// nothing and leaves last empty is never begun; one that only fills last
// is one round trip. Retries are as InTx's.
func (s *Store) InTxBatch(ctx context.Context, fn func(tx pgx.Tx, first, last *pgx.Batch) error) error {
	return s.retryBounded(ctx, func(a *attempt) error { return s.tryTxBatch(ctx, a, fn) })
}

// retry runs try until it succeeds, fails for a reason other than
// ErrTransient, or ctx is done, backing off between attempts.
func (s *Store) retry(ctx context.Context, try func() error) error {
	return retry(ctx, s.cfg, s.cfg.OnRetry, try)
}

// retry is Store.retry with cfg's policy, telling onRetry (when set) of
// each retry.
func retry(ctx context.Context, cfg Config, onRetry func(attempt int, err error, delay time.Duration), try func() error) error {
	return retryAtLeast(ctx, cfg, onRetry, nil, try)
}

// RetryWith runs try as the store retries its transactions (backoff from
// base, DefaultRetryBase when not positive, up to DefaultRetryMax, each
// retry told to onRetry, a stop while retrying saying why it was) until it
// succeeds, fails for a reason transient does not accept, or ctx ends: for
// a start's steps that are not the store's (the worker's first Kafka
// request).
func RetryWith(ctx context.Context, base time.Duration, transient func(error) bool,
	onRetry func(attempt int, err error, delay time.Duration), try func() error) error {
	if base <= 0 {
		base = DefaultRetryBase
	}
	return retryLoop(ctx, Config{RetryBase: base, RetryMax: DefaultRetryMax}, transient, onRetry, nil, try)
}

// retryAtLeast is retry waiting at least floor(err) (when floor is set)
// after an attempt that failed with err.
func retryAtLeast(ctx context.Context, cfg Config, onRetry func(attempt int, err error, delay time.Duration),
	floor func(error) time.Duration, try func() error) error {
	return retryLoop(ctx, cfg, func(err error) bool { return errors.Is(err, ErrTransient) }, onRetry, floor, try)
}

// retryLoop is retryAtLeast with transient saying which errors are
// retried.
func retryLoop(ctx context.Context, cfg Config, transient func(error) bool, onRetry func(attempt int, err error, delay time.Duration),
	floor func(error) time.Duration, try func() error) error {
	var last error // the previous attempt's transient error
	for attempt := 1; ; attempt++ {
		err := try()
		if last != nil && err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			// ctx ended while we were about to retry: report why we were retrying.
			return fmt.Errorf("giving up after %d attempts: %w (last error: %w)", attempt-1, ctx.Err(), last)
		}
		if err == nil || !transient(err) {
			return err
		}
		step := attempt
		if lockTimedOut(err) {
			// The attempt waited its lock_timeout already, for a lock
			// another transaction held, not for a server in trouble: a
			// wait cut into pieces, each retried promptly, not later and
			// later (a migration's floor, lockErrorBackoff, still holds).
			step = 1
		}
		delay := Backoff(cfg.RetryBase, cfg.RetryMax, step)
		if floor != nil {
			delay = max(delay, floor(err))
		}
		if onRetry != nil {
			onRetry(attempt, err, delay)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("giving up after %d attempts: %w (last error: %w)", attempt, ctx.Err(), err)
		case <-time.After(delay):
		}
		last = err
	}
}

// tryTx is an attempt of InTx. One whose idle limit grew (attempt.idleSQL)
// sets it right after BEGIN, a round trip of its own (the simple
// protocol's one, not a prepare's too).
func (s *Store) tryTx(ctx context.Context, a *attempt, fn func(pgx.Tx) error) error {
	return a.run(ctx, s.Pool, func(c *pgxpool.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return translate(err)
		}
		if sql := a.idleSQL(); sql != "" {
			if _, err := tx.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
				return s.finish(ctx, tx, err)
			}
		}
		return s.finish(ctx, tx, fn(tx))
	})
}

func (s *Store) tryTxBatch(ctx context.Context, a *attempt, fn func(pgx.Tx, *pgx.Batch, *pgx.Batch) error) error {
	return a.run(ctx, s.Pool, func(c *pgxpool.Conn) error { return s.sendTxBatch(ctx, c, a.idleSQL(), fn) })
}

// sendTxBatch is an attempt of InTxBatch on c, idle (attempt.idleSQL, when
// not "") queued right after BEGIN, in the same batch: no round trip of
// its own, but for pgx's prepare on a connection that has not run it. The
// connection is held by the attempt rather than by a pool transaction:
// COMMIT goes inside a batch, which pgx.Tx's Commit knows nothing of.
// Release destroys a connection left inside a transaction.
func (s *Store) sendTxBatch(ctx context.Context, c *pgxpool.Conn, idle string, fn func(pgx.Tx, *pgx.Batch, *pgx.Batch) error) error {
	var err error
	first, last := &pgx.Batch{}, &pgx.Batch{}
	first.BeginTx(pgx.TxOptions{})
	if idle != "" {
		first.Queue(idle)
	}
	tx := &batchTx{conn: c.Conn(), first: first}
	if err = fn(tx, first, last); err == nil {
		err = tx.commit(ctx, last)
	}
	if err != nil && tx.Tx != nil && c.Conn().PgConn().TxStatus() != 'I' {
		rollback(ctx, tx.Tx)
	}
	return translate(err)
}

// finish commits tx, or rolls it back when fn failed with err.
func (s *Store) finish(ctx context.Context, tx pgx.Tx, err error) error {
	if err != nil {
		rollback(ctx, tx)
		return translate(err)
	}
	return translate(tx.Commit(ctx))
}

// RollbackTimeout bounds a rollback. It runs even when ctx is done, so that
// the connection goes back clean; a connection that stopped answering
// (half-open: the server's host gone without a reset) is closed at the
// bound instead of holding its transaction's caller until TCP gives up.
const RollbackTimeout = 5 * time.Second

func rollback(ctx context.Context, tx pgx.Tx) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RollbackTimeout)
	defer cancel()
	_ = tx.Rollback(ctx)
}

// batchTx is InTxBatch's transaction: it begins when its first batch is
// sent, and is then the begun transaction (pgx.Tx's methods before that are
// a programming error; Commit and Rollback are InTxBatch's business).
type batchTx struct {
	pgx.Tx
	conn  *pgx.Conn
	first *pgx.Batch
}

func (t *batchTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.Tx != nil {
		return t.Tx.SendBatch(ctx, b)
	}
	if b != t.first {
		return pgx.FailedBatchResults(b, errors.New("store: the first batch of InTxBatch must be sent first"))
	}
	br := t.conn.SendBatch(ctx, b)
	t.Tx = br.Tx()
	return br
}

// commit sends last with COMMIT; before anything was sent, first goes with
// them, and with nothing at all to send nothing began.
func (t *batchTx) commit(ctx context.Context, last *pgx.Batch) error {
	b := last
	if t.Tx == nil {
		if last.Len() == 0 {
			return nil
		}
		t.first.QueuedQueries = append(t.first.QueuedQueries, last.QueuedQueries...)
		b = t.first
	}
	b.Queue("COMMIT").Exec(func(tag pgconn.CommandTag) error {
		if tag.String() == "ROLLBACK" { // the transaction had failed
			return pgx.ErrTxCommitRollback
		}
		return nil
	})
	return t.SendBatch(ctx, b).Close()
}

// Backoff is the delay before retry number attempt (1-based): base doubled per
// attempt, capped at max, with up to 20% jitter so retrying workers spread out.
func Backoff(base, max time.Duration, attempt int) time.Duration {
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}
