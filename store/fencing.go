package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// TokenFloorLockClass is the first key of the transaction-scoped advisory
// lock RaiseTokenFloor takes before it reads the fencing_tokens sequence
// (pg_locks: locktype advisory, classid TokenFloorLockClass); the second is
// hashtext of the schema, as for VacuumLockClass. It serializes the checks
// of replicas that start at the same moment: without it, one could read
// the sequence before another's setval and then set it to its own, lower,
// floor after the other's floor had granted tokens.
const TokenFloorLockClass = 0x4c57_5446 // "LWTF"

// TokenSequence is the fencing_tokens sequence as RaiseTokenFloor found
// and left it.
type TokenSequence struct {
	// Was is the last token the sequence had handed out when it was read
	// (last_value, or the one before it when is_called is false); Now is
	// the last token after: Was, or the floor when Raised.
	Was, Now int64
	// Raised says this call sent a setval: the sequence was behind when
	// it read it. Sent by an attempt whose answer was lost, the retry may
	// find the sequence where that setval (or another replica's) left it:
	// Raised still, Was as the first attempt to send one read it, Now as
	// the last attempt left it.
	Raised bool
}

// RaiseTokenFloor moves the fencing_tokens sequence up to floor when the
// last token it handed out is below published, a token already granted;
// the next token is then floor + 1. A sequence at or above published is
// left alone. floor must be at least published.
//
// It exists for a database that lost committed transactions (a restore, a
// point-in-time recovery, an asynchronous standby promoted without the
// primary's last commits): its sequence went back, and would hand out again
// tokens already granted (docs/design.md "PostgreSQL lost transactions").
// Its test is against published, not floor: in normal running the
// sequence is just above the last token published, and a test against
// floor would move it (and cry loss) at every start.
//
// It only moves the sequence forward: one transaction takes the advisory
// lock TokenFloorLockClass first, then reads the sequence and sets it only
// when it is below floor, so concurrent calls (every replica starting at
// once after a loss) run one after the other and end at the highest floor.
// It does not lock out a nextval running at the same moment (nothing
// does): floor must leave room above any token another replica may grant
// meanwhile, as published plus a wide margin does.
//
// It is retried on a transient error. setval is not transactional: an
// attempt whose answer was lost may have moved the sequence, and the retry
// then finds it at floor. Whether a setval was sent is kept across the
// attempts, so such a call still reports Raised.
func (s *Store) RaiseTokenFloor(ctx context.Context, published, floor int64) (TokenSequence, error) {
	if floor < published {
		return TokenSequence{}, fmt.Errorf("raising the fencing token floor to %d: below the token published, %d", floor, published)
	}
	var seq TokenSequence
	// Kept across attempts: a setval stays done when its transaction
	// does not commit.
	sent, sentWas := false, int64(0)
	err := s.InTx(ctx, func(tx pgx.Tx) error {
		seq = TokenSequence{}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))`, TokenFloorLockClass); err != nil {
			return err
		}
		if err := tx.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM fencing_tokens`).Scan(&seq.Was); err != nil {
			return err
		}
		seq.Now = seq.Was
		if seq.Was >= published {
			return nil
		}
		if !sent {
			sent, sentWas = true, seq.Was
		}
		if _, err := tx.Exec(ctx, `SELECT setval('fencing_tokens', $1)`, floor); err != nil {
			return err
		}
		seq.Now = floor
		return nil
	})
	if err != nil {
		return TokenSequence{}, fmt.Errorf("raising the fencing token floor to %d: %w", floor, err)
	}
	if sent {
		seq.Raised, seq.Was = true, sentWas
	}
	return seq, nil
}
