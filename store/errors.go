package store

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrTransient marks a failure that a retry of the whole transaction can
	// cure: serialization failure (40001), deadlock (40P01), a lost,
	// refused or terminated connection, a server starting up, shutting down
	// or out of connection slots; and a request_id's outcome inserted by a concurrent transaction
	// (a unique violation on processed_requests' key: the retry finds the
	// request applied and answers it from that outcome). InTx retries these
	// itself. A connection lost during COMMIT is transient too, though the
	// transaction may have committed: see InTx.
	ErrTransient = errors.New("transient database error")
	// ErrInvalidData means PostgreSQL refused a value (SQLSTATE class 22,
	// data exception: division by zero, invalid text or JSON, a number out of
	// range, ...). The same statement with the same values fails again, so
	// no retry can help: the input must be refused before it reaches the
	// database, or the query fixed.
	ErrInvalidData = errors.New("data refused by PostgreSQL")
	// ErrConstraint means a statement broke an integrity constraint (SQLSTATE
	// class 23: unique, foreign key, check, not null, exclusion). Retrying the
	// same transaction breaks it again; the caller decides what it means (a
	// duplicate, a bug).
	ErrConstraint = errors.New("integrity constraint violated")
	// ErrAccessDenied means PostgreSQL refused the role: it cannot log in
	// (SQLSTATE class 28: no such role, wrong password, refused by
	// pg_hba.conf) or lacks a privilege the statement needs (42501). Only a
	// change of configuration or grants cures it.
	ErrAccessDenied = errors.New("access to PostgreSQL denied")
	// ErrNoDatabase means the configured database does not exist (SQLSTATE
	// 3D000) and Open could not create it; the cause says why.
	ErrNoDatabase = errors.New("database does not exist")
	// ErrConnString means Open refused Config.URL before connecting: pgx
	// cannot parse it, or cannot read a file it names (sslrootcert,
	// sslcert, sslkey), which the error then names. Only a change of
	// configuration cures it. The connection string itself is never quoted:
	// it may hold a password.
	ErrConnString = errors.New("parsing the PostgreSQL connection string")
	// ErrOffsetMoved means a partition's stored offset is not the one this
	// worker expected: another worker owns the partition now, so this batch
	// must not commit. Or this batch committed already: a connection lost
	// during COMMIT leaves the outcome unknown and InTx retries, so the
	// caller tells the two apart by reading the offset (OffsetMovedError).
	ErrOffsetMoved = errors.New("partition offset moved: partition owned elsewhere")
	// ErrSchemaNewer means the schema was migrated by a newer lockworker,
	// further than this binary's migrations go (a downgrade): this binary
	// cannot know what the later migrations changed, so Migrate refuses to
	// run against it, and no retry cures it (SchemaNewerError).
	ErrSchemaNewer = errors.New("database schema newer than this binary")
	// ErrRetiredTopicID means CheckTopicID was given a topic ID the topic
	// had before its current one (RetiredTopicIDError): read from a broker
	// that has not caught up with the topic's deletion yet (reading it
	// again, from another broker or later, cures it), or from another Kafka
	// cluster, or an earlier one failed back to. Nothing was changed.
	ErrRetiredTopicID = errors.New("the topic ID read is one the topic had before its current one")
	// ErrDatabaseEncoding means Open refused the database because its
	// encoding (server_encoding) is not UTF8 (DatabaseEncodingError). The
	// connections send and read text as UTF-8 (client_encoding UTF8, which
	// pgx needs of the simple protocol): another encoding converts it, so a
	// name stored before as the bytes sent no longer matches the same name
	// sent now, and a character the encoding lacks is refused; SQL_ASCII
	// converts nothing, but cannot decode a JSON escape of a non-ASCII
	// character (\u00e9 in owner_metadata), which fails that command's
	// batch on every retry (SQLSTATE 0A000, not a data refusal that the
	// worker quarantines). Only a UTF8 database cures it.
	ErrDatabaseEncoding = errors.New("the database's encoding is not UTF8")
)

// DatabaseEncodingError is ErrDatabaseEncoding for one database.
type DatabaseEncodingError struct {
	Database, Encoding string // Encoding: its server_encoding
}

func (e *DatabaseEncodingError) Error() string {
	return fmt.Sprintf("database %q has encoding %s, and lockworker needs UTF8: create a UTF8 database "+
		"(createdb -E UTF8 -T template0 NAME, or CREATE DATABASE NAME ENCODING 'UTF8' TEMPLATE template0), "+
		"move lockworker's tables, if any, to it with every replica stopped (README \"Upgrading\" says how), "+
		"and point DATABASE_URL (or POSTGRES_DATABASE) at it", e.Database, e.Encoding)
}

func (e *DatabaseEncodingError) Is(target error) bool { return target == ErrDatabaseEncoding }

// RetiredTopicIDError is ErrRetiredTopicID for one topic: ID is the ID
// read, Current the one stored.
type RetiredTopicIDError struct {
	Topic, ID, Current string
}

func (e *RetiredTopicIDError) Error() string {
	return fmt.Sprintf("%v: %s read as %s, stored as %s", ErrRetiredTopicID, e.Topic, e.ID, e.Current)
}

func (e *RetiredTopicIDError) Unwrap() error { return ErrRetiredTopicID }

// SchemaNewerError is ErrSchemaNewer with the versions.
type SchemaNewerError struct {
	Version int // the schema's, in VersionTable
	Latest  int // this binary's last migration
	// OldestReader is the oldest binaries' version the schema allows
	// (CompatTable); 0 where it says none (before migration 019).
	OldestReader int
}

func (e *SchemaNewerError) Error() string {
	oldest := e.Version
	if e.OldestReader > 0 {
		oldest = e.OldestReader
	}
	return fmt.Sprintf("database schema is at version %d, newer than this binary's %d: run a lockworker built with migration %d or later "+
		"(going back to this version needs the database restored from before migration %d)", e.Version, e.Latest, oldest, e.Latest+1)
}

func (e *SchemaNewerError) Is(target error) bool { return target == ErrSchemaNewer }

// OffsetMovedError is ErrOffsetMoved for one partition.
type OffsetMovedError struct {
	Topic     string
	Partition int32
	From      int64 // the offset the batch expected to advance from
}

func (e *OffsetMovedError) Error() string {
	return fmt.Sprintf("advancing offset of %s/%d from %d: %v", e.Topic, e.Partition, e.From, ErrOffsetMoved)
}

func (e *OffsetMovedError) Unwrap() error { return ErrOffsetMoved }

// translate wraps err with the sentinel it belongs to (ErrTransient,
// ErrInvalidData, ErrConstraint, ErrAccessDenied, ErrNoDatabase), keeping the
// cause, so errors.As still finds the *pgconn.PgError. An error of no class,
// or one that carries its sentinel already, is returned as it is.
func translate(err error) error { return translateAs(err, transient) }

// translateStart is translate for Open and Migrate: ErrTransient only when
// startRetryable says a retry may cure err, and never once ctx is done (its
// own deadline is not a connect_timeout: the retry would end at once, after
// a needless "retrying").
//
// An attempt that failed for a reason a retry may cure, once ctx is done
// (a signal while connecting, say), ends the start for ctx's reason, its
// error wrapping ctx.Err(): the retry that ctx stopped, not the attempt's
// own failure, is why the start ends (lockworker exits 0 on a signal).
func translateStart(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil && !errors.Is(err, ctx.Err()) && startRetryable(err) {
		return fmt.Errorf("%w (the last attempt: %w)", ctx.Err(), err)
	}
	return translateAs(err, func(err error) bool { return ctx.Err() == nil && startRetryable(err) })
}

// translateAs is translate with isTransient saying what ErrTransient is.
func translateAs(err error, isTransient func(error) bool) error {
	if err == nil {
		return err
	}
	sentinel := classify(err, isTransient)
	if sentinel == nil || errors.Is(err, sentinel) {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// classify returns the sentinel err belongs to, or nil.
func classify(err error, isTransient func(error) bool) error {
	if isTransient(err) {
		return ErrTransient
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) != 5 {
		return nil
	}
	switch class := pgErr.Code[:2]; {
	case class == "22":
		return ErrInvalidData
	case class == "23":
		return ErrConstraint
	case class == "28", pgErr.Code == "42501":
		return ErrAccessDenied
	case pgErr.Code == "3D000":
		return ErrNoDatabase
	}
	return nil
}

// transient is ErrTransient's rule for transactions and every other call at
// run time. A connection refused for its TLS (the server's certificate no
// longer verifies, after a rotation say) is transient here, as a failed
// connection is (a *pgconn.ConnectError): the pool's other connections may
// still work, and a transaction or the worker's resume retries in place
// rather than fail. So is one that ran out of its connect timeout, or whose
// settings did (errSetupTimedOut), though pgconn reports the first as
// context.DeadlineExceeded, which transient otherwise refuses as the
// caller's own deadline: the pool connects under a context of its own
// (puddle keeps only the caller's values), so a deadline in its
// ConnectError is never the caller's. (Two callers connect under their
// own context: Probe reads the deadline as its own either way, and
// ensureDatabase runs at start, where translateStart retries nothing once
// the caller's context is done.)
//
// (Conflict is the part of it where PostgreSQL refused the transaction for
// another one.)
func transient(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || errors.Is(err, errSetupTimedOut) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if Conflict(err) || OutOfResources(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "57P01", "57P02", "57P03", // admin shutdown (pg_terminate_backend), crash shutdown, cannot connect now
			"53300", // too many connections
			"25P03", // idle_in_transaction_session_timeout ended the session (Config.IdleInTransactionTimeout: the process was paused)
			"25006": // read-only: a standby, or a failover's old primary (readOnlyReset connects anew)
			return true
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exception class
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	// Whole transactions are retried, so an error after something was sent is
	// as safe to retry as one before, except during COMMIT, which may have
	// committed: the worker's offset guard makes that retry fail with
	// ErrOffsetMoved instead of applying twice.
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, pgconn.ErrConnClosed)
}

// startRetryable is the rule of a start (Open and Migrate with
// Config.RetryStart), which waits for PostgreSQL instead of failing. A
// failed connection (a *pgconn.ConnectError) is retried unless every
// attempt it reports failed for a reason no wait cures (setupCause);
// pgconn tries each host, each of its addresses and, under sslmode prefer
// or allow, with and without TLS, and joins the attempts' errors in its
// ConnectError. So the plain-text attempt of sslmode prefer refused by a
// hostssl-only server does not hide its TLS attempt's reset, nor one host
// refusing the role another host that is down. transient accepts every
// ConnectError (one that ran out of its connect timeout included), so
// that loop alone decides which a wait cannot cure. Any other error is
// retried when transient accepts it and no error it wraps is a
// setupCause. So a start retries connections refused or reset, EOF,
// timeouts, a server starting up, shutting down, out of connection slots
// or out of its own resources (OutOfResources: a migration refused for a
// full disk waits for room), a host name that does not resolve (a Kubernetes Service not
// created yet, but a misspelt host too), and any failure of a connection
// it does not recognise; each attempt is told to OnStartRetry with the
// error. A migration that waited MigrationLockTimeout for a table's lock
// (a *MigrationLockError, 55P03) is retried too, at least
// MigrationLockTimeout later: the transaction holding that lock may end,
// and the others queued behind the migration run during the backoff. The
// caller's own deadline is told apart by translateStart.
func startRetryable(err error) bool {
	var lockErr *MigrationLockError
	if errors.As(err, &lockErr) {
		return true
	}
	if !transient(err) {
		return false
	}
	attempts := connectAttempts(err)
	for _, attempt := range attempts {
		if !anyError(attempt, setupCause) {
			return true
		}
	}
	return len(attempts) == 0
}

// connectAttempts returns the errors of the attempts err reports: the
// errors a *pgconn.ConnectError joins (one per address tried and per host
// name that did not resolve), or err alone.
func connectAttempts(err error) []error {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		for e := connectErr.Unwrap(); e != nil; e = errors.Unwrap(e) {
			if joined, ok := e.(interface{ Unwrap() []error }); ok {
				return joined.Unwrap()
			}
		}
	}
	return []error{err}
}

// setupCause reports whether err, one error of an attempt's chain, is a
// failure of the connection's setup that no wait cures: the role refused
// (class 28) or lacking a privilege (42501), the database missing (3D000),
// the server's certificate not verifying, a TLS alert the server sent (a
// client certificate it refuses, no common protocol), or one of
// pgconnSetupErrors.
func setupCause(err error) bool {
	switch e := err.(type) {
	case *pgconn.PgError:
		return strings.HasPrefix(e.Code, "28") || e.Code == "42501" || e.Code == "3D000"
	case *tls.CertificateVerificationError, x509.UnknownAuthorityError, x509.HostnameError, x509.CertificateInvalidError:
		return true
	case *net.OpError:
		return e.Op == "remote error" // a TLS alert the server sent
	}
	msg := err.Error()
	for _, prefix := range pgconnSetupErrors {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

// pgconnSetupErrors are how the errors of pgconn's (pgx v5.12.0) own setup
// checks begin, which it does not export as types or values; setupCause
// matches each error of an attempt's chain against them:
//
//   - pgconn.go:609 (startTLS): the server answered the SSLRequest with
//     no. Under sslmode require and verify-* nothing else is tried; under
//     prefer and allow the attempt without TLS is made too, and unless it
//     also fails for a reason no wait cures, the start is retried.
//   - pgconn.go:153, 482, 552: sslcertmode; pgconn.go:441, 445:
//     require_auth.
//   - pgconn.go:452 and auth_scram.go:54, 62, 75: channel_binding=require
//     unmet. The scram ones come wrapped as "failed SASL auth: ...", which
//     an EOF or a reset during SASL is too, so the inner message is
//     matched, never that wrapper.
//
// A text pgx changes, or a check this list does not name (GSS, "server
// protocol version too low"), fails toward waiting: the start retries it,
// each attempt told to OnStartRetry (the worker logs a warn line), and
// never exits on it.
var pgconnSetupErrors = []string{
	"server refused TLS connection",
	"invalid sslcertmode: ", "sslcertmode check failed: ",
	"invalid require_auth: ", "require_auth check failed: ",
	"channel binding check failed: ",
	"channel binding required but ",
}

// anyError reports whether match holds for err or an error it wraps,
// following each branch of a join.
func anyError(err error, match func(error) bool) bool {
	if err == nil {
		return false
	}
	if match(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return anyError(u.Unwrap(), match)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if anyError(e, match) {
				return true
			}
		}
	}
	return false
}

// lockTimedOut reports whether err is a statement's wait for a lock ended
// by lock_timeout (Config.LockTimeout, or a migration's).
func lockTimedOut(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "55P03"
}

// OutOfResources reports whether err is PostgreSQL refusing a transaction
// for want of its own resources, which a retry cures once an operator or
// the server frees them (transient): class 53 but its connection slots
// (53300, a failed connection as any other), disk full, out of memory, a
// configured limit such as max_locks_per_transaction, or an I/O error
// (58030). Retried as an unexplained failure is, a batch waited up to a
// minute between attempts, long after the disk had room again, and nothing
// counted it. One command can meet them too, every time it runs (a
// session_close sorting more than temp_file_limit, 53400): like any
// refusal outside classes 22 and 23 it was never dead-lettered, so it
// holds its partitions either way, now counted and retried within 5 s
// until an operator lifts the limit.
func OutOfResources(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (strings.HasPrefix(pgErr.Code, "53") && pgErr.Code != "53300" || pgErr.Code == "58030")
}

// Conflict reports whether err is PostgreSQL refusing a transaction for
// another one, which a retry cures (transient): a serialization failure, a
// deadlock, a lock waited for longer than Config.LockTimeout, or a
// request_id's outcome inserted concurrently (processed_requests_pkey).
// Contention, not an outage.
func Conflict(err error) bool {
	if lockTimedOut(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", "40P01": // serialization failure, deadlock
		return true
	case "23505": // unique violation
		return pgErr.ConstraintName == "processed_requests_pkey"
	}
	return false
}
