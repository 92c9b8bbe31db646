package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/topics"
)

// WithRLock adds its WithMode(Shared) to a copy of the caller's options:
// a slice with spare capacity, which goroutines may share (the Client is
// safe for concurrent use), is not written.
func TestWithRLockLeavesTheCallersOptions(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "rlock-opts")
	opts := make([]client.AcquireOption, 1, 4)
	opts[0] = client.WithLease(10 * time.Second)
	require.NoError(t, client.WithRLock(ctx, c, uniq("rlock-opts"), func(context.Context, *client.Lease) error { return nil }, opts...))
	require.Nil(t, opts[:2][1], "WithRLock wrote into the caller's backing array")
}

// A negative WithLimit is refused before sending, as WithLease(-1s) is: an
// *Error of INVALID_REQUEST from the contract's own validation. 0 is the
// default, 1.
func TestNegativeWithLimitIsRefused(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "limit-below-one")
	lock := uniq("limit-below-one")
	_, leaseErr := c.TryAcquire(ctx, lock, client.WithLease(-time.Second))
	for _, n := range []int{-1, -10001} {
		_, err := c.TryAcquire(ctx, lock, client.WithLimit(n))
		require.ErrorIs(t, err, client.ErrInvalidRequest, "WithLimit(%d)", n)
		var e, le *client.Error
		require.True(t, errors.As(err, &e) && errors.As(leaseErr, &le))
		require.Equal(t, topics.CodeInvalidRequest, le.Code)
		require.Equal(t, le.Code, e.Code)
		require.Zero(t, e.Event, "refused by the client, without a round trip")
		require.ErrorContains(t, err, "outside 1..10000")
	}
	l, err := c.TryAcquire(ctx, lock, client.WithLimit(0))
	require.NoError(t, err)
	require.Equal(t, 1, l.Info().Limit)
	require.NoError(t, l.Release(ctx))
}

// Campaign takes WithMode(Exclusive) and WithLimit(1), which change
// nothing, and refuses the other mode and limits.
func TestCampaignModeAndLimit(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "campaign-opts")
	e := client.NewElection(c, uniq("campaign-opts"))
	ld, err := e.Campaign(ctx, "v", client.WithMode(client.Exclusive), client.WithLimit(1))
	require.NoError(t, err)
	require.NoError(t, ld.Resign(ctx))
	for _, o := range []client.AcquireOption{client.WithMode(client.Shared), client.WithLimit(2), client.WithLimit(-1)} {
		_, err := e.Campaign(ctx, "v", o)
		require.ErrorIs(t, err, client.ErrInvalidRequest)
	}
}

// Remaining is the time left before the local deadline, on this host's
// clocks: above 0 and at most the lease (or the session's TTL) while held,
// 0 once released, closed or lost.
func TestRemaining(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "remaining")

	l, err := c.Acquire(ctx, uniq("remaining"), client.WithLease(5*time.Second))
	require.NoError(t, err)
	require.Greater(t, l.Remaining(), time.Duration(0))
	require.LessOrEqual(t, l.Remaining(), 5*time.Second)
	require.NoError(t, l.Release(ctx))
	require.Zero(t, l.Remaining(), "released")

	l, err = c.Acquire(ctx, uniq("remaining"), client.WithLease(300*time.Millisecond), client.WithoutKeepAlive())
	require.NoError(t, err)
	require.LessOrEqual(t, l.Remaining(), 300*time.Millisecond)
	<-l.Lost()
	require.Zero(t, l.Remaining(), "lost")

	s, err := c.NewSession(ctx, 3*time.Second)
	require.NoError(t, err)
	sl, err := c.Acquire(ctx, uniq("remaining"), client.WithSession(s))
	require.NoError(t, err)
	require.Greater(t, s.Remaining(), time.Duration(0))
	require.LessOrEqual(t, s.Remaining(), 3*time.Second)
	require.Greater(t, sl.Remaining(), time.Duration(0))
	require.LessOrEqual(t, sl.Remaining(), 3*time.Second, "a session's lease has the session's")
	require.NoError(t, s.Close(ctx))
	require.Zero(t, s.Remaining(), "closed")
	require.Zero(t, sl.Remaining(), "its session closed")

	ld, err := client.NewElection(c, uniq("remaining")).Campaign(ctx, "v", client.WithLease(2*time.Second))
	require.NoError(t, err)
	require.Greater(t, ld.Remaining(), time.Duration(0))
	require.LessOrEqual(t, ld.Remaining(), 2*time.Second)
	require.NoError(t, ld.Resign(ctx))
	require.Zero(t, ld.Remaining(), "resigned")
}
