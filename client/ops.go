package client

import (
	"context"
	"fmt"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Query returns the lock as the worker sees it: status free when nobody ever
// held it (or its row was cleaned up), expired for a lease past its end even
// before the worker has ended it.
func (c *Client) Query(ctx context.Context, name string) (topics.LockInfo, error) {
	ev, err := c.Do(ctx, c.command(topics.OpQuery, name))
	if err != nil {
		return topics.LockInfo{}, fmt.Errorf("querying lock %q: %w", name, err)
	}
	if ev.LockInfo == nil {
		return topics.LockInfo{}, fmt.Errorf("querying lock %q: %s without lock_info", name, ev.Type)
	}
	return *ev.LockInfo, nil
}

// CleanupResult is what a cleanup did.
type CleanupResult struct {
	// Count is how many locks it touched.
	Count int
	// LockNames are the locks whose ended lease it expired or whose idle row
	// it deleted, as lock keys ("namespace/name" or "name").
	LockNames []string
}

// Cleanup ends every lease of name past its expiry and deletes released or
// expired rows idle longer than maxAge that have no waiters. name "*"
// (topics.CleanupAll) covers every lock of Config.Namespace. maxAge < 0 means
// the worker's default (an hour).
func (c *Client) Cleanup(ctx context.Context, name string, maxAge time.Duration) (CleanupResult, error) {
	cmd := c.command(topics.OpCleanup, name)
	if maxAge >= 0 {
		s := maxAge.Seconds()
		cmd.MaxAgeSeconds = &s
	}
	ev, err := c.Do(ctx, cmd)
	if err != nil {
		return CleanupResult{}, fmt.Errorf("cleaning up %q: %w", name, err)
	}
	r := CleanupResult{LockNames: ev.CleanedLockNames}
	if ev.CleanedCount != nil {
		r.Count = *ev.CleanedCount
	}
	return r, nil
}

// Do sends any command and returns its final reply: the way to release or
// extend a lease this process does not hold as a *Lease (lockctl does), or
// to send fields the helpers do not. An empty RequestID gets a new one,
// ReplyTo is always this client's reply topic, and an empty Namespace takes
// Config.Namespace. Commands are validated before they are sent. A waiting
// acquire returns its grant or timeout, not lock.queued; unlike Acquire, Do does
// not withdraw an acquire whose ctx ends while it waits. A lock.rejected
// reply is returned along with its *Error.
func (c *Client) Do(ctx context.Context, cmd topics.Command) (topics.Event, error) {
	if cmd.RequestID == "" {
		cmd.RequestID = newRequestID()
	}
	if cmd.Namespace == "" {
		cmd.Namespace = c.cfg.Namespace
	}
	cmd.ReplyTo = c.replyTopic
	if err := validate(cmd, c.cfg.Topics.ReplyPrefix); err != nil {
		return topics.Event{}, err
	}
	if err := c.begin(); err != nil {
		return topics.Event{}, err
	}
	defer c.ops.Done()
	octx, cancel := c.opContext(ctx)
	defer cancel()
	wait := seconds(cmd.WaitTimeout) + time.Second
	ev, err := c.exchange(octx, cmd, func(ev topics.Event) (bool, time.Duration) {
		if ev.Type == topics.TypeQueued {
			return false, wait
		}
		return true, 0
	})
	if err != nil {
		return ev, err
	}
	if ev.Type == topics.TypeRejected {
		return ev, rejection(ev)
	}
	return ev, nil
}
