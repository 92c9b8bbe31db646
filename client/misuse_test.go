package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
)

// misuseClient is a client of the test's own, whose Close at its end is
// bounded: a misuse that left an operation counted would have it wait for
// ever.
func misuseClient(t *testing.T) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := client.New(ctx, client.Config{Brokers: env.Brokers, Requester: "misuse"})
	require.NoError(t, err)
	t.Cleanup(func() {
		closed := make(chan struct{})
		go func() { _ = c.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Error("Close still waits 10 s after the test")
		}
	})
	return c
}

// failOnPanic, deferred, fails the test of a call that panicked rather
// than return an error.
func failOnPanic(t *testing.T) {
	if r := recover(); r != nil {
		t.Fatalf("panicked: %v", r)
	}
}

// A nil option (one left unset: var opt WatchOption; if flag { opt = ... })
// is no option, in every call that takes options.
func TestNilOptionsAreSkipped(t *testing.T) {
	c := misuseClient(t)
	ctx := ctxT(t)
	lock := uniq("nil-option")
	t.Run("Acquire", func(t *testing.T) {
		defer failOnPanic(t)
		owner := uniq("nil-option-owner")
		l, err := c.Acquire(ctx, lock, nil, client.WithOwner(owner), nil)
		require.NoError(t, err)
		require.Equal(t, owner, l.Owner, "the option beside the nil ones applied")
		require.NoError(t, l.Release(ctx))
	})
	t.Run("NewSession", func(t *testing.T) {
		defer failOnPanic(t)
		s, err := c.NewSession(ctx, 2*time.Second, nil)
		require.NoError(t, err)
		require.NoError(t, s.Close(ctx))
	})
	t.Run("Watch", func(t *testing.T) {
		defer failOnPanic(t)
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		revs, err := c.Watch(wctx, lock, nil)
		require.NoError(t, err)
		select {
		case _, ok := <-revs:
			require.True(t, ok, "the lock as it is now")
		case <-ctx.Done():
			t.Fatal("no revision")
		}
	})
	t.Run("Observe", func(t *testing.T) {
		defer failOnPanic(t)
		octx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := client.NewElection(c, uniq("nil-option-election")).Observe(octx, nil)
		require.NoError(t, err)
	})
	t.Run("Subscriber", func(t *testing.T) {
		defer failOnPanic(t)
		sub, err := c.Subscriber(ctx, nil)
		require.NoError(t, err)
		require.NoError(t, sub.Close())
	})
}

// A nil handle is refused with ErrInvalidRequest, before anything is sent,
// rather than dereferenced.
func TestNilHandlesAreRefused(t *testing.T) {
	c := misuseClient(t)
	ctx := ctxT(t)
	lock := uniq("nil-handle")
	run := func(context.Context, *client.Lease) error { return nil }
	refused := func(t *testing.T, err error) {
		t.Helper()
		require.ErrorIs(t, err, client.ErrInvalidRequest)
		st, err := c.Query(ctx, lock)
		require.NoError(t, err)
		require.Equal(t, client.StatusFree, st.Status, "nothing acquired")
	}
	t.Run("WithSession(nil)", func(t *testing.T) {
		defer failOnPanic(t)
		_, err := c.Acquire(ctx, lock, client.WithSession(nil))
		refused(t, err)
		require.ErrorContains(t, err, "WithSession(nil)")
		_, err = client.NewElection(c, lock).Campaign(ctx, "v", client.WithSession(nil))
		refused(t, err)
	})
	t.Run("WithLock nil client", func(t *testing.T) {
		defer failOnPanic(t)
		refused(t, client.WithLock(ctx, nil, lock, run))
		refused(t, client.WithRLock(ctx, nil, lock, run))
	})
	t.Run("WithLock nil fn", func(t *testing.T) {
		defer failOnPanic(t)
		refused(t, client.WithLock(ctx, c, lock, nil))
	})
	t.Run("NewElection nil client", func(t *testing.T) {
		defer failOnPanic(t)
		e := client.NewElection(nil, lock)
		_, err := e.Campaign(ctx, "v")
		refused(t, err)
		_, err = e.Leader(ctx)
		refused(t, err)
		_, err = e.Observe(ctx)
		refused(t, err)
	})
}
