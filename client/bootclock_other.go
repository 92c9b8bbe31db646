//go:build !linux

package client

import "time"

// bootClock is the wall clock where no boot clock is read (see bootNow):
// it goes on while the host is suspended, but a step moves it.
func bootClock() time.Duration { return wallClock() }

// bootClockName names bootClock in errors.
func bootClockName() string { return wallClockName }

// bootClockAhead is why a deadline passes by bootClock before it does by
// the monotonic clock.
func bootClockAhead() string { return wallClockAhead }
