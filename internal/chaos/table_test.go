package chaos

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCompareTableSettledComparesOnce: with its context already done, or no
// time to compare in, CompareTableSettled compares nothing, and says so:
// an error, not a pass.
func TestCompareTableSettledComparesOnce(t *testing.T) {
	done, cancel := context.WithCancel(context.Background())
	cancel()
	err := CompareTableSettled(done, []string{"127.0.0.1:1"}, "postgres://127.0.0.1:1/none", 30*time.Second)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorContains(t, err, "not compared")
	for _, within := range []time.Duration{0, -time.Second} {
		err = CompareTableSettled(context.Background(), []string{"127.0.0.1:1"}, "postgres://127.0.0.1:1/none", within)
		require.ErrorContains(t, err, "not compared", within)
	}
}
