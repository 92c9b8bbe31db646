package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// A lease kept by a session shows it, and so does each holder.
func TestDescribeSession(t *testing.T) {
	at := topics.NewTime(time.Date(2026, 12, 3, 9, 0, 0, 0, time.UTC))
	li := &topics.LockInfo{LockName: "a", OwnerID: "o", Status: topics.StatusAcquired, FencingToken: 7, SessionID: "s-1",
		Mode: topics.ModeShared, HolderCount: 2, Holders: []topics.Holder{
			{OwnerID: "o", Mode: topics.ModeShared, FencingToken: 7, ExpiresAt: at, SessionID: "s-1"},
			{OwnerID: "p", Mode: topics.ModeShared, FencingToken: 8, ExpiresAt: at}}}
	d := describe(topics.Event{LockInfo: li})
	require.Contains(t, d, "a acquired owner=o token=7 session=s-1")
	require.Contains(t, d, "\n  o shared token=7 expires=2026-12-03T09:00:00.000000Z session=s-1\n  p shared token=8 expires=2026-12-03T09:00:00.000000Z")
	li.Status, li.HolderCount = topics.StatusReleased, 0
	require.Equal(t, "a released owner=o token=7 session=s-1 acquisitions=0 extensions=0 mode=shared", describe(topics.Event{LockInfo: li}),
		"the session whose end released it")
}

// The lease's remaining time is counted on the database's clock (expires_at
// minus the event's occurred_at), not from this host's clock, which may be
// off by any amount (here the event is from 2020).
func TestDescribeRemainingTimeByTheServersClock(t *testing.T) {
	at := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	li := &topics.LockInfo{LockName: "a", OwnerID: "o", Status: topics.StatusAcquired, FencingToken: 7,
		AcquiredAt: topics.NewTimePtr(at), ExpiresAt: topics.NewTimePtr(at.Add(30 * time.Second)), LeaseDuration: 30}
	d := describe(topics.Event{Type: topics.TypeAcquired, LockInfo: li, OccurredAt: topics.Time{Time: at.Add(100 * time.Millisecond)}})
	require.Contains(t, d, " expires=2020-01-02T03:04:35.000000Z (in 29.9s) ")
}

// A lock in a lock-delay says until when: an acquire is refused until
// then, though the lock shows expired (or free).
func TestDescribeLockDelay(t *testing.T) {
	until := topics.NewTimePtr(time.Date(2026, 12, 3, 9, 0, 30, 0, time.UTC))
	li := &topics.LockInfo{LockName: "a", OwnerID: "o", Status: topics.StatusExpired, FencingToken: 7, DelayUntil: until}
	require.Contains(t, describe(topics.Event{LockInfo: li}), "a expired owner=o token=7 acquisitions=0 extensions=0 delay_until=2026-12-03T09:00:30.000000Z")
}
