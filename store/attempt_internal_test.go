package store

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A transaction's bound doubles after an attempt whose statements
// outlasted it, up to maxAttemptGrowth (64) times the first, and not after one
// that only waited for a connection.
func TestAttemptBoundGrowth(t *testing.T) {
	s := &Store{cfg: Config{AttemptTimeout: time.Second, RetryBase: time.Microsecond, RetryMax: time.Microsecond}}
	var limits []time.Duration
	ran := []bool{true, true, false, true, true, true, true, true, true, true}
	err := s.retryBounded(context.Background(), func(a *attempt) error {
		limits = append(limits, a.limit)
		if len(limits) > len(ran) {
			return nil
		}
		a.ran = ran[len(limits)-1]
		return fmt.Errorf("%w: %w", ErrTransient, ErrAttemptTimedOut)
	})
	require.NoError(t, err)
	s2 := func(n int) time.Duration { return time.Duration(n) * time.Second }
	require.Equal(t, []time.Duration{s2(1), s2(2), s2(4), s2(4), s2(8), s2(16), s2(32), s2(64), s2(64), s2(64), s2(64)}, limits)
}
