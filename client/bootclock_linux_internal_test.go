//go:build linux

package client

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestBootClockIsBootTime: on Linux the second deadline's clock is
// CLOCK_BOOTTIME, which a wall-clock step does not move: a reading lies
// between two readings of it.
func TestBootClockIsBootTime(t *testing.T) {
	read := func() time.Duration {
		var ts unix.Timespec
		require.NoError(t, unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts))
		return time.Duration(ts.Nano())
	}
	before := read()
	got := bootClock()
	after := read()
	require.LessOrEqual(t, before, got)
	require.LessOrEqual(t, got, after)
	require.Equal(t, "boot clock", bootClockName())
}
