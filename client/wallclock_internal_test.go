package client

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// suspendedClient is a Client whose wall clock the test moves: as after a
// host suspend, when the monotonic clock (the deadline timers') stood still
// and the wall clock did not.
func suspendedClient() (*Client, func(time.Duration)) {
	c := &Client{leases: map[int64][]*Lease{}, ended: map[int64]topics.Event{}, sessions: map[string]*Session{}}
	var skew time.Duration
	c.now = func() time.Time { return time.Now().Add(skew) }
	return c, func(d time.Duration) { skew = d }
}

// TestLeasePastItsWallDeadlineIsLost: a lease whose deadline has passed by
// the wall clock but not by the monotonic clock (the host was suspended
// past it: the worker has expired the lease, and may have granted the lock
// to another) is lost at the next wall-clock check, not a suspend later
// when its timer fires.
func TestLeasePastItsWallDeadlineIsLost(t *testing.T) {
	c, suspend := suspendedClient()
	now := time.Now()
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 21, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(30 * time.Second)), LeaseDuration: 30}
	l := c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
		acquireOptions{}, false, now, now)
	defer l.lose(ErrReleased)

	require.True(t, c.checkWall())
	require.NoError(t, l.Err(), "lost before its deadline")

	suspend(60 * time.Second)
	require.True(t, c.checkWall())
	select {
	case <-l.Lost():
	default:
		t.Fatal("the lease is still believed held after its deadline by the wall clock")
	}
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorIs(t, context.Cause(l.Context()), ErrLeaseLost)
	require.ErrorContains(t, l.Err(), "local clock")
	require.Empty(t, c.leases)
	require.False(t, c.checkWall(), "nothing left to watch: the watch stops")
}

// TestSessionPastItsWallDeadlineIsLost: the same for a session, and the
// leases in it with it.
func TestSessionPastItsWallDeadlineIsLost(t *testing.T) {
	c, suspend := suspendedClient()
	now := time.Now()
	s := &Session{ID: "s1", Owner: "me", TTL: 10 * time.Second, c: c, leases: map[*Lease]bool{}, lost: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	s.update(topics.Event{Type: topics.TypeSessionOpened, OccurredAt: topics.Time{Time: now},
		SessionInfo: &topics.SessionInfo{SessionID: s.ID, OwnerID: s.Owner, TTL: 10, ExpiresAt: topics.NewTime(now.Add(10 * time.Second))}}, now)
	s.mu.Unlock()
	c.sessions[s.ID] = s
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 22, Status: topics.StatusAcquired, SessionID: s.ID,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(10 * time.Second)), LeaseDuration: 60}
	l := c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
		acquireOptions{session: s}, false, now, now)
	defer l.lose(ErrReleased)

	require.True(t, c.checkWall())
	require.NoError(t, s.Err())

	suspend(20 * time.Second)
	c.checkWall()
	select {
	case <-s.Lost():
	default:
		t.Fatal("the session is still believed open after its deadline by the wall clock")
	}
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.ErrorContains(t, s.Err(), "local clock")
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorIs(t, l.Err(), ErrSessionLost)
	require.False(t, c.checkWall(), "nothing left to watch")
}

// TestWallWatchLifecycle: the wall-clock watch starts with the first lease
// registered, once per client, and Close waits for it to stop.
func TestWallWatchLifecycle(t *testing.T) {
	c, _ := suspendedClient()
	c.closing, c.close = context.WithCancel(context.Background())
	now := time.Now()
	grant := func(token int64) *Lease {
		info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: token, Status: topics.StatusAcquired,
			AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(time.Minute)), LeaseDuration: 60}
		return c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
			acquireOptions{}, false, now, now)
	}
	c.mu.Lock()
	require.False(t, c.watching, "no watch before a lease")
	c.mu.Unlock()
	a, b := grant(31), grant(32)
	defer a.lose(ErrReleased)
	defer b.lose(ErrReleased)
	c.mu.Lock()
	require.True(t, c.watching)
	c.closed = true // as Close does
	c.mu.Unlock()
	c.close()
	c.ops.Wait() // the watch is among the operations Close waits for
	c.mu.Lock()
	defer c.mu.Unlock()
	require.False(t, c.watching)
}
