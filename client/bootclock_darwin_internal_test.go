//go:build darwin

package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestBootClockIsMonotonic: on macOS the second deadline's clock is
// CLOCK_MONOTONIC, which goes on while the host sleeps: a reading lies
// between two readings of it.
func TestBootClockIsMonotonic(t *testing.T) {
	read := func() time.Duration {
		var ts unix.Timespec
		require.NoError(t, unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts))
		return time.Duration(ts.Nano())
	}
	before := read()
	got := bootClock()
	after := read()
	require.LessOrEqual(t, before, got)
	require.LessOrEqual(t, got, after)
	require.Equal(t, "boot clock", bootClockName())
}
