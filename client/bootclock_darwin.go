//go:build darwin

package client

import (
	"time"

	"golang.org/x/sys/unix"
)

// hasMonotonic says whether clock_gettime(CLOCK_MONOTONIC) works (macOS
// 10.12 on).
var hasMonotonic = func() bool {
	var ts unix.Timespec
	return unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil
}()

// bootClock reads macOS's CLOCK_MONOTONIC, which clock_gettime(3) says
// "will continue to increment while the system is asleep" (unlike
// CLOCK_UPTIME_RAW, mach_absolute_time, that time.Now's monotonic reading
// comes from) and which, being monotonic, a wall-clock step does not move
// back; or, should it fail, the wall clock, as other systems do (chosen
// once: readings of the two must never be compared).
func bootClock() time.Duration {
	if !hasMonotonic {
		return wallClock()
	}
	// It worked once, so it does. Should it fail all the same, ts stays
	// zero: as on Linux (bootclock_linux.go), the boot-clock check is then
	// off and the monotonic deadline still covers.
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// bootClockName names bootClock in errors.
func bootClockName() string {
	if !hasMonotonic {
		return "wall clock"
	}
	return "boot clock"
}

// bootClockAhead is why a deadline passes by bootClock before it does by
// the monotonic clock.
func bootClockAhead() string {
	if !hasMonotonic {
		return "the host was suspended, or the wall clock stepped forward"
	}
	return "the host was suspended"
}
