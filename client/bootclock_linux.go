//go:build linux

package client

import (
	"time"

	"golang.org/x/sys/unix"
)

// hasBootTime says whether the kernel has CLOCK_BOOTTIME (2.6.39 on).
var hasBootTime = func() bool {
	var ts unix.Timespec
	return unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil
}()

// bootClock reads CLOCK_BOOTTIME: the monotonic clock plus the time the
// host spent suspended, which a wall-clock step does not move (see
// bootNow); or, on a kernel without it, the wall clock, as other systems
// do (chosen once: readings of the two must never be compared).
func bootClock() time.Duration {
	if !hasBootTime {
		return wallClock()
	}
	// It worked once, so it does. Should it fail all the same, ts stays
	// zero: a reading of 0 passes no deadline, so the boot-clock check is
	// off while it fails (the monotonic deadline still covers), and a
	// deadline counted from it is early, which is safe.
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return time.Duration(ts.Nano())
}

// bootClockName names bootClock in errors.
func bootClockName() string {
	if !hasBootTime {
		return wallClockName
	}
	return "boot clock"
}

// bootClockAhead is why a deadline passes by bootClock before it does by
// the monotonic clock.
func bootClockAhead() string {
	if !hasBootTime {
		return wallClockAhead
	}
	return "the host was suspended"
}
