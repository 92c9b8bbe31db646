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
	// as safe to retry as one before, except during COMMIT, which may have
	// committed: the worker's offset guard makes that retry fail with
	// ErrOffsetMoved instead of applying twice.
	return pgconn.SafeToRetry(err) || pgconn.Timeout(err) || errors.Is(err, pgconn.ErrConnClosed)
}
