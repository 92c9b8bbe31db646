package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestExpiredBeforeLeaseRegistered: a lock.expired read before Acquire has
// registered the lease it ends (the grant's reply and the expiry arrive back
// to back) still makes the lease lost at once.
func TestExpiredBeforeLeaseRegistered(t *testing.T) {
	c := &Client{leases: map[int64]*Lease{}, expired: map[int64]bool{}}
	now := time.Now()
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 7, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(time.Minute)), LeaseDuration: 60}
	c.route(topics.Event{Type: topics.TypeExpired, LockInfo: info, OccurredAt: topics.Time{Time: now}})
	granted := topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}}
	l := c.newLease(granted, acquireOptions{}, now, now)
	select {
	case <-l.Lost():
	default:
		t.Fatal("the lease is not lost")
	}
	require.ErrorIs(t, context.Cause(l.Context()), ErrLeaseLost)
}

// TestQueuedGrantDeadlineErrsEarly: for a grant after waiting, the local
// deadline counts from the send and the worker's time of lock.queued, so it
// comes no later than the lease's real end.
func TestQueuedGrantDeadlineErrsEarly(t *testing.T) {
	c := &Client{leases: map[int64]*Lease{}, expired: map[int64]bool{}}
	sent := time.Now().Add(-12 * time.Second) // queued 12 s ago, granted 2 s ago, read now
	queuedAt := sent.Add(5 * time.Millisecond)
	grantedAt := sent.Add(10 * time.Second)
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 8, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(grantedAt), ExpiresAt: topics.NewTimePtr(grantedAt.Add(10 * time.Second)), LeaseDuration: 10}
	l := c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: grantedAt}},
		acquireOptions{}, sent, queuedAt)
	defer l.lose(ErrReleased)
	l.mu.Lock()
	deadline := l.deadline
	l.mu.Unlock()
	require.False(t, deadline.After(info.ExpiresAt.Time), "deadline %s after the lease's end %s", deadline, info.ExpiresAt.Time)
	require.WithinDuration(t, info.ExpiresAt.Time, deadline, 10*time.Millisecond)
}
