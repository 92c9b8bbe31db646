package client

import "time"

// wallCheckInterval is how often a Client looks at the wall-clock deadlines
// of its leases and sessions (watchWall).
const wallCheckInterval = time.Second

// wallNow reads the wall clock (c.now, time.Now unless a test set another),
// without a monotonic reading: comparisons with it are by the wall clock.
func (c *Client) wallNow() time.Time {
	if c.now == nil {
		return time.Now().Round(0)
	}
	return c.now().Round(0)
}

// watchWall starts the client's one wall-clock watch (wallLoop) unless it
// runs already, the client is closed, or it was never started (a Client
// built by a test, which drives checkWall itself). A lease's or a
// session's local deadline runs on the monotonic clock, which on Linux
// stands still while the host is suspended (a laptop asleep, a paused VM):
// after the resume its timer would fire a whole suspend late, while the
// worker has ended the lease and granted the lock to someone else. The
// wall clock moves on during a suspend, so its deadline has passed by
// then, and the watch sees it within wallCheckInterval. c.mu is held, by
// the caller that registers a lease or a session.
func (c *Client) watchWall() {
	if c.watching || c.closed || c.closing == nil {
		return
	}
	c.watching = true
	c.ops.Add(1) // as begin: Close waits for the watch
	go c.wallLoop()
}

// wallLoop runs checkWall every wallCheckInterval, until no lease or
// session remains or the client closes.
func (c *Client) wallLoop() {
	defer c.ops.Done()
	t := time.NewTicker(wallCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.closing.Done():
			c.mu.Lock()
			c.watching = false
			c.mu.Unlock()
			return
		}
		if !c.checkWall() {
			return
		}
	}
}

// checkWall loses every lease and session whose deadline by the wall clock
// has passed. It returns false, the watch ended (watching cleared under
// c.mu, so that the next registration starts another), when no lease or
// session remains to watch.
func (c *Client) checkWall() bool {
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
	now := c.wallNow()
	for _, s := range sessions {
		s.checkWall(now)
	}
	for _, l := range leases {
		l.checkWall(now)
	}
	return true
}
