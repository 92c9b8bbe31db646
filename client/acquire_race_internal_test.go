package client

import (
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestGivenUpAcquireWaitsForItsOwnersOthers: the release of an acquire given
// up is owed, not sent, while another acquire of the lock by the same owner
// is in flight; the last of them sends it, unless it ended with a Lease or a
// Lease of the client holds the lock for the owner.
func TestGivenUpAcquireWaitsForItsOwnersOthers(t *testing.T) {
	// Under authentication, as the worker scopes it: the lease's owner.
	c := &Client{creds: &credentials{claims: jwt.RegisteredClaims{Subject: "billing"}},
		leases: map[int64][]*Lease{}, ended: map[int64]topics.Event{}, acquiring: map[acquireKey]acquiring{}}
	cmd := topics.Command{Namespace: "ns", LockName: "job", OwnerID: "me"}

	a, b := c.startAcquire(cmd), c.startAcquire(cmd)
	require.False(t, c.endAcquire(b, false, true), "the other may have been granted the lock")
	require.False(t, c.endAcquire(a, true, false), "it was: its Lease releases it")

	a, b = c.startAcquire(cmd), c.startAcquire(cmd)
	require.False(t, c.endAcquire(a, false, true))
	require.True(t, c.endAcquire(b, false, false), "the last ended without a Lease: it withdraws the first")

	a, b = c.startAcquire(cmd), c.startAcquire(cmd)
	require.False(t, c.endAcquire(a, false, true))
	require.True(t, c.endAcquire(b, false, true), "both given up")

	a, b = c.startAcquire(cmd), c.startAcquire(cmd)
	require.False(t, c.endAcquire(a, false, false))
	require.False(t, c.endAcquire(b, false, false), "nothing given up, nothing owed")

	other := c.startAcquire(topics.Command{Namespace: "ns", LockName: "job", OwnerID: "you"})
	a = c.startAcquire(cmd)
	require.True(t, c.endAcquire(a, false, true), "another owner's acquire is not waited for")
	require.False(t, c.endAcquire(other, false, false))

	now := time.Now()
	c.newLease(topics.Event{Type: topics.TypeAcquired, OccurredAt: topics.Time{Time: now}, LockInfo: &topics.LockInfo{
		Namespace: "ns", LockName: "job", OwnerID: "billing:me", FencingToken: 3, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(time.Minute)), LeaseDuration: 60,
	}}, acquireOptions{}, now, now)
	a = c.startAcquire(cmd)
	require.False(t, c.endAcquire(a, false, true), "a renewal of a held lease")
	require.Empty(t, c.acquiring)
}
