package client

import (
	"context"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
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
		leases: map[int64][]*Lease{}, ended: map[endKey]topics.Event{}, acquiring: map[acquireKey]acquiring{}}
	cmd := topics.Command{Namespace: "ns", LockName: "job", OwnerID: "me"}
	start := func(cmd topics.Command) acquireKey {
		k, waited, err := c.startAcquire(context.Background(), cmd)
		require.NoError(t, err)
		require.False(t, waited)
		return k
	}

	a, b := start(cmd), start(cmd)
	require.False(t, c.endAcquire(b, false, true), "the other may have been granted the lock")
	require.False(t, c.endAcquire(a, true, false), "it was: its Lease releases it")

	a, b = start(cmd), start(cmd)
	require.False(t, c.endAcquire(a, false, true))
	require.True(t, c.endAcquire(b, false, false), "the last ended without a Lease: it withdraws the first")
	c.withdrawn(b)

	a, b = start(cmd), start(cmd)
	require.False(t, c.endAcquire(a, false, true))
	require.True(t, c.endAcquire(b, false, true), "both given up")
	c.withdrawn(b)

	a, b = start(cmd), start(cmd)
	require.False(t, c.endAcquire(a, false, false))
	require.False(t, c.endAcquire(b, false, false), "nothing given up, nothing owed")

	other := start(topics.Command{Namespace: "ns", LockName: "job", OwnerID: "you"})
	a = start(cmd)
	require.True(t, c.endAcquire(a, false, true), "another owner's acquire is not waited for")
	c.withdrawn(a)
	require.False(t, c.endAcquire(other, false, false))

	now := time.Now()
	_, _ = c.newLease(topics.Event{Type: topics.TypeAcquired, OccurredAt: topics.Time{Time: now}, LockInfo: &topics.LockInfo{
		Namespace: "ns", LockName: "job", OwnerID: "billing:me", FencingToken: 3, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(time.Minute)), LeaseDuration: 60,
	}}, acquireOptions{}, false, sentAtTime(c, now), now)
	a = start(cmd)
	require.False(t, c.endAcquire(a, false, true), "a renewal of a held lease")
	require.Empty(t, c.acquiring)
}

// An acquire that starts while a release owed for its lock and owner is on
// its way waits for it: sent before it, the release would withdraw it.
func TestAcquireWaitsForItsOwnersWithdrawal(t *testing.T) {
	c := &Client{creds: &credentials{}, leases: map[int64][]*Lease{}, acquiring: map[acquireKey]acquiring{}}
	cmd := topics.Command{LockName: "job", OwnerID: "me"}
	k, _, err := c.startAcquire(context.Background(), cmd)
	require.NoError(t, err)
	require.True(t, c.endAcquire(k, false, true))

	gone, cancel := context.WithCancel(context.Background())
	cancel()
	_, _, err = c.startAcquire(gone, cmd)
	require.ErrorIs(t, err, context.Canceled, "its caller gave up waiting")
	started := make(chan struct{})
	go func() {
		_, waited, err := c.startAcquire(context.Background(), cmd)
		assert.NoError(t, err)
		assert.True(t, waited)
		close(started)
	}()
	select {
	case <-started:
		t.Fatal("started before the withdrawal was answered")
	case <-time.After(20 * time.Millisecond):
	}
	c.withdrawn(k)
	<-started
	require.Equal(t, 1, c.acquiring[k].n)
}
