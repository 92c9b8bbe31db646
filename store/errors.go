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
	// refused or terminated connection (not one refused for its role or
	// the server's certificate) or one not answered within the URL's
	// connect_timeout, a server starting up, shutting down or out of
	// connection slots; and a request_id's outcome inserted by a concurrent transaction
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
	// ErrOffsetMoved means a partition's stored offset is not the one this
	// worker expected: another worker owns the partition now, so this batch
	// must not commit. Or this batch committed already: a connection lost
	// during COMMIT leaves the outcome unknown and InTx retries, so the
	// caller tells the two apart by reading the offset (OffsetMovedError).
	ErrOffsetMoved = errors.New("partition offset moved: partition owned elsewhere")
)

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
func translate(err error) error {
	if err == nil {
		return err
	}
	sentinel := classify(err)
	if sentinel == nil || errors.Is(err, sentinel) {
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// classify returns the sentinel err belongs to, or nil.
func classify(err error) error {
	if transient(err) {
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

func transient(err error) bool {
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) && pgconn.Timeout(err) {
		// The server did not answer within the URL's connect_timeout (or
		// before ctx's deadline, which the retry then sees).
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case "40001", "40P01", // serialization failure, deadlock
			"57P01", "57P02", "57P03", // admin shutdown (pg_terminate_backend), crash shutdown, cannot connect now
			"53300": // too many connections
			return true
		case "23505": // unique violation
			return pgErr.ConstraintName == "processed_requests_pkey"
		}
		return strings.HasPrefix(pgErr.Code, "08") // connection exception class
	}
	if badCertificate(err) { // a failed connection, but only a new certificate cures it
		return false
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	if errors.As(err, &connectErr) {
		return true
	}
	// Whole transactions are retried, so an error after something was sent is
	// as safe to retry as one before, except during COMMIT, which may have
	// committed: the worker's offset guard makes that retry fail with
	// ErrOffsetMoved instead of applying twice.
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, pgconn.ErrConnClosed)
}

// badCertificate reports whether err says the server's certificate did not
// verify (sslmode verify-ca or verify-full).
func badCertificate(err error) bool {
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}
