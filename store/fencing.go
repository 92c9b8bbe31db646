package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// RaiseTokenFloor moves the fencing_tokens sequence up to floor when the
// next token it would hand out is not above published, a token already
// granted; the next token is then floor + 1. A sequence whose next token is
// above published is left alone. floor must be at least published. It
// reports whether it moved the sequence and, if so, the sequence's
// last_value before.
//
// It exists for a database that lost committed transactions (a restore, a
// point-in-time recovery, an asynchronous standby promoted without the
// primary's last commits): its sequence went back, and would hand out again
// tokens already granted (docs/design.md "PostgreSQL lost transactions").
// Its test is against published, not floor: in normal running the
// sequence is just above the last token published, and a test against
// floor would move it (and cry loss) at every start.
//
// One statement, which can only move the sequence forward: it reads the
// sequence and sets it in the same scan, and sets nothing unless it is
// below floor. It does not lock out a nextval running at the same moment
// (nothing does): floor must leave room above any token another replica
// may grant meanwhile, as published plus a wide margin does. Being
// idempotent, it is retried on a transient error, as a transaction is.
func (s *Store) RaiseTokenFloor(ctx context.Context, published, floor int64) (raised bool, was int64, err error) {
	if floor < published {
		return false, 0, fmt.Errorf("raising the fencing token floor to %d: below the token published, %d", floor, published)
	}
	err = s.retry(ctx, func() error {
		// setval in the target list, never in WHERE: PostgreSQL may
		// evaluate a WHERE's conditions in any order, the target list
		// only for rows that passed it. last_value there is the value
		// before setval: the row is taken apart before the list is
		// computed. The last token handed out is last_value, or the one
		// before it when is_called is false (setval(..., false), which
		// a restore may leave).
		var set int64
		err := s.Pool.QueryRow(ctx, `
			SELECT last_value, setval('fencing_tokens', $2) FROM fencing_tokens
			WHERE CASE WHEN is_called THEN last_value ELSE last_value - 1 END < $1 AND last_value < $2`,
			published, floor).Scan(&was, &set)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			raised, was = false, 0
			return nil
		case err != nil:
			return translate(err)
		}
		raised = true
		return nil
	})
	if err != nil {
		return false, 0, fmt.Errorf("raising the fencing token floor to %d: %w", floor, err)
	}
	return raised, was, nil
}
