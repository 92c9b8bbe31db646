package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	// ErrTransient marks a failure that a retry of the whole transaction can
	// cure: serialization failure (40001), deadlock (40P01), a lost or
	// terminated connection. InTx retries these itself.
	ErrTransient = errors.New("transient database error")
	// ErrOffsetMoved means a partition's stored offset is not the one this
	// worker expected: another worker owns the partition now, so this batch
	// must not commit.
	ErrOffsetMoved = errors.New("partition offset moved: partition owned elsewhere")
)

// translate wraps err with the sentinel it belongs to, keeping the cause.
func translate(err error) error {
	if err == nil || errors.Is(err, ErrTransient) {
		return err
	}
	if transient(err) {
		return fmt.Errorf("%w: %w", ErrTransient, err)
	}
	return err
}

func transient(err error) bool {
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
		}
		return pgErr.Code[:2] == "08" // connection exception class
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	// Whole transactions are retried, so an error after something was sent is
	// as safe to retry as one before: the failed transaction never committed.
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, pgconn.ErrConnClosed)
}
