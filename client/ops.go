package client

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/omninode/lockworker/topics"
)

// Status is a lock's state as Query reports it.
type Status string

// The statuses of a lock (the contract's lock_info.status).
const (
	// StatusFree: nobody ever held the lock, or its row was cleaned up.
	StatusFree Status = topics.StatusFree
	// StatusAcquired: an owner holds the lock.
	StatusAcquired Status = topics.StatusAcquired
	// StatusReleased: the last lease was released.
	StatusReleased Status = topics.StatusReleased
	// StatusExpired: the last lease ran out.
	StatusExpired Status = topics.StatusExpired
	// StatusRevoked: the last lease was revoked.
	StatusRevoked Status = topics.StatusRevoked
)

// LockState is a lock as Query returns it. Times are by the worker's clock;
// a zero time is one the worker did not give.
type LockState struct {
	Namespace string
	Name      string
	Status    Status
	// Owner is the holder, or the last one when the lock is not acquired.
	Owner string
	// Token is the fencing token of the current or last lease.
	Token int64
	// AcquiredAt is when the current or last lease was granted.
	AcquiredAt time.Time
	// ExpiresAt is when the current lease ends (or the last one ended).
	ExpiresAt time.Time
	// LeaseDuration is the lease's duration, the keep-alive target.
	LeaseDuration time.Duration
	// Acquisitions and Extensions count the lock's grants and extensions.
	Acquisitions int64
	Extensions   int64
	// Metadata is the owner_metadata of the current or last lease.
	Metadata json.RawMessage
	// Info is the same lock in the contract's wire form (lock_info of the
	// lock.status reply), for those who pass it on as JSON.
	Info topics.LockInfo
}

func lockState(li topics.LockInfo) LockState {
	s := LockState{
		Namespace: li.Namespace, Name: li.LockName, Status: Status(li.Status), Owner: li.OwnerID, Token: li.FencingToken,
		LeaseDuration: seconds(li.LeaseDuration), Acquisitions: li.AcquisitionCount, Extensions: li.ExtensionCount,
		Metadata: li.OwnerMetadata, Info: li,
	}
	if li.AcquiredAt != nil {
		s.AcquiredAt = li.AcquiredAt.Time
	}
	if li.ExpiresAt != nil {
		s.ExpiresAt = li.ExpiresAt.Time
	}
	return s
}

// Query returns the lock as the worker sees it: StatusFree when nobody ever
// held it (or its row was cleaned up), StatusExpired for a lease past its
// end even before the worker has ended it. A reply other than a lock.status
// about this lock (no worker sends one) is refused.
func (c *Client) Query(ctx context.Context, name string) (LockState, error) {
	cmd := c.command(topics.OpQuery, name)
	ev, err := c.Do(ctx, cmd)
	if err == nil {
		err = replyStatus(ev, cmd)
	}
	if err != nil {
		return LockState{}, fmt.Errorf("querying lock %q: %w", name, err)
	}
	return lockState(*ev.LockInfo), nil
}

// replyStatus checks the answer to the query cmd as replyLease checks a
// grant's: a lock.status, the contract's only answer to a query but a
// refusal, whose lock_info is about cmd's lock. A worker's bug or another
// producer on the reply topic could send another, and Query would return
// another lock's state as this one's.
func replyStatus(ev topics.Event, cmd topics.Command) error {
	li := ev.LockInfo
	switch {
	case ev.Type != topics.TypeStatus:
		return fmt.Errorf("unexpected reply %s", ev.Type)
	case li == nil:
		return fmt.Errorf("%s without lock_info", ev.Type)
	case !sameLock(li, cmd.Namespace, cmd.LockName):
		return fmt.Errorf("%s of lock %q, not %q", ev.Type, topics.LockKey(li.Namespace, li.LockName), topics.LockKey(cmd.Namespace, cmd.LockName))
	}
	return nil
}

// CleanupResult is what a cleanup did.
type CleanupResult struct {
	// Count is how many locks it touched.
	Count int
	// LockNames are the locks whose ended lease it expired or whose idle row
	// it deleted, as lock keys ("namespace/name" or "name").
	LockNames []string
	// More says the cleanup stopped at the worker's bound: it selected
	// 10,000 holder rows of ended leases, those of locks another
	// transaction held (skipped) counted too, or deleted 10,000 idle rows.
	// Each lock those rows name is settled whole, so a call may end more
	// than 10,000 leases; and each call reads every idle row and ended
	// lease of the scope to pick the oldest, so it takes longer the larger
	// the namespace. Call Cleanup again for the rest. A call may say More
	// having cleaned little, and again while those locks are held: bound
	// the loop by your own patience (a deadline, a number of calls).
	More bool
}

// Cleanup ends every lease of name past its expiry and deletes released or
// expired rows idle longer than maxAge that have no waiters, up to the
// worker's bound a call (CleanupResult.More). name "*" (topics.CleanupAll)
// covers every lock of Config.Namespace. maxAge < 0 means the worker's
// default (an hour).
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
	r := CleanupResult{LockNames: ev.CleanedLockNames, More: ev.More}
	if ev.CleanedCount != nil {
		r.Count = *ev.CleanedCount
	}
	return r, nil
}

// Revoke ends the leases of lock name, or only owner's when owner is not
// "" (an owner_id as events show it), with reason, which each holder is
// told (lock.revoked: an SDK holder's lease is lost with ErrRevoked). The
// next waiters are granted, unless a revoked lease's lock-delay holds them.
// It returns how many leases it ended; none held: ErrNotHeld. Where the
// workers require authentication, only a requester whose token has the
// admin claim may revoke (else ErrForbidden).
func (c *Client) Revoke(ctx context.Context, name, owner, reason string) (int, error) {
	cmd := c.command(topics.OpRevoke, name)
	cmd.OwnerID, cmd.Reason = owner, reason
	ev, err := c.Do(ctx, cmd)
	if err != nil {
		return 0, fmt.Errorf("revoking lock %q: %w", name, err)
	}
	return ev.RevokedCount, nil
}

// Do sends any command and returns its final reply: the way to release or
// extend a lease this process does not hold as a *Lease (lockctl does), or
// to send fields the helpers do not. An empty RequestID gets a new one,
// ReplyTo is always this client's reply topic, and an empty Namespace takes
// Config.Namespace. Commands are validated before they are sent. A waiting
// acquire returns its grant or timeout, not lock.queued; unlike Acquire, Do does
// not withdraw an acquire whose ctx ends while it waits. A lock.rejected
// reply is returned along with its *Error. A RequestID may be in flight in
// more than one Do at once (a hedged resend of one command): the worker
// applies it once and answers every copy alike, and each Do hears it.
func (c *Client) Do(ctx context.Context, cmd topics.Command) (topics.Event, error) {
	if err := c.sends(); err != nil {
		return topics.Event{}, err
	}
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
