package client

import "time"

// bootCheckInterval is how often a Client looks at the boot-clock deadlines
// of its leases and sessions (watchBoot).
const bootCheckInterval = time.Second

// The boot clock is the clock a lease's and a session's second local
// deadline runs on (Lease.update): one that goes on while the host is
// suspended, unlike the monotonic clock of time.Now, which on Linux stands
// still then, and that a step of the wall clock (date -s, chrony's
// makestep, a VM's clock sync) does not move. On Linux that is
// CLOCK_BOOTTIME (bootclock_linux.go); elsewhere it is the wall clock
// (bootclock_other.go), which a step does move: a step forward then loses
// the leases early, which is safe, and one back is caught by the monotonic
// deadline. A reading is a time.Duration since the clock's own epoch, and
// only differences of readings mean anything.

// bootNow reads the boot clock: c.boot, bootClock unless a test set
// another.
func (c *Client) bootNow() time.Duration {
	if c.boot == nil {
		return bootClock()
	}
	return c.boot()
}

// sentAt is when a command was sent, read on both clocks a local deadline
// counts from (Lease.update): mono by time.Now (with its monotonic
// reading), boot by the boot clock.
type sentAt struct {
	mono time.Time
	boot time.Duration
}

// sentNow is now, as a command's sentAt.
func (c *Client) sentNow() sentAt {
	return sentAt{mono: time.Now(), boot: c.bootNow()}
}

// timeLeft is the time left before a local deadline kept on both clocks
// (deadline, boot: see Lease.update), by the one nearer its end: the
// monotonic clock stands still during a suspend, which the watch (within
// bootCheckInterval) has maybe not caught up with yet. 0 once past.
func (c *Client) timeLeft(deadline time.Time, boot time.Duration) time.Duration {
	left := time.Until(deadline)
	if boot != 0 {
		left = min(left, boot-c.bootNow())
	}
	return max(left, 0)
}

// watchBoot starts the client's one boot-clock watch (bootLoop) unless it
// runs already, the client is closed, or it was never started (a Client
// built by a test, which drives checkBoot itself). A lease's or a
// session's local deadline runs on the monotonic clock, which on Linux
// stands still while the host is suspended (a laptop asleep, a paused VM):
// after the resume its timer would fire a whole suspend late, while the
// worker has ended the lease and granted the lock to someone else. The
// boot clock moves on during a suspend, so its deadline has passed by
// then, and the watch sees it within bootCheckInterval. c.mu is held, by
// the caller that registers a lease or a session.
func (c *Client) watchBoot() {
	if c.watching || c.closed || c.closing == nil {
		return
	}
	c.watching = true
	c.ops.Add(1) // as begin: Close waits for the watch
	go c.bootLoop()
}

// bootLoop runs checkBoot every bootCheckInterval, until no lease or
// session remains or the client closes.
func (c *Client) bootLoop() {
	defer c.ops.Done()
	var tick <-chan time.Time = c.bootTicks
	if tick == nil {
		t := time.NewTicker(bootCheckInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
		case <-c.closing.Done():
			c.mu.Lock()
			c.watching = false
			c.mu.Unlock()
			return
		}
		if !c.checkBoot() {
			return
		}
	}
}

// checkBoot loses every lease and session whose deadline by the boot clock
// has passed. It returns false, the watch ended (watching cleared under
// c.mu, so that the next registration starts another), when no lease or
// session remains to watch.
func (c *Client) checkBoot() bool {
	c.mu.Lock()
	if len(c.leases) == 0 && len(c.sessions) == 0 {
		c.watching = false
		c.mu.Unlock()
		return false
	}
	var leases []*Lease
	for _, ls := range c.leases {
		leases = append(leases, ls...)
	}
	sessions := make([]*Session, 0, len(c.sessions))
	for _, s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	now := c.bootNow()
	for _, s := range sessions {
		s.checkBoot(now)
	}
	for _, l := range leases {
		l.checkBoot(now)
	}
	return true
}

// wallClock reads the wall clock, as a boot-clock reading: bootClock where
// there is no boot clock.
func wallClock() time.Duration { return time.Duration(time.Now().UnixNano()) }

// The wall clock standing in for the boot clock (bootClock), as errors
// name it and say why a deadline passed by it first.
const (
	wallClockName  = "wall clock"
	wallClockAhead = "the host was suspended, or the wall clock stepped forward"
)
