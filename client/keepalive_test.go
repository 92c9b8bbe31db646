package client_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// extensionsOf is the lock.extended answers to the client's extensions of
// lock read so far, with extension_count above after, in the worker's order.
func extensionsOf(rs []e2e.Received, lock string, after int64) []topics.Event {
	var evs []topics.Event
	for _, r := range rs {
		if li := r.Event.LockInfo; r.Event.Type == topics.TypeExtended && li != nil && li.LockName == lock && li.ExtensionCount > after {
			evs = append(evs, r.Event)
		}
	}
	return evs
}

// ahead is how far past the worker's time of the extension ev the lease's
// expiry lies: both are PostgreSQL's clock.
func ahead(ev topics.Event) time.Duration {
	return ev.LockInfo.ExpiresAt.Sub(ev.OccurredAt.Time)
}

// The keep-alive of a lease under 0.3 s, whose rounds come less than the
// contract's smallest extension (0.1 s) apart, keeps the worker's expiry
// within max(lease, 0.2 s) of the worker's now, round after round, rather
// than carrying it ever further ahead (a holder that died would then hold
// the lock for longer than its lease). The slack covers the local
// deadline's early error, a command's way to the worker; the last third's
// median is judged, as a drift would move it. A lease lost to a
// round trip slower than this host allows is tried again, on a lock of its
// own.
func TestKeepAliveShortLeaseStaysWithinItsLease(t *testing.T) {
	const lease, rounds, slack = 250 * time.Millisecond, 30, 100 * time.Millisecond
	c, replies, ctx, _ := keepAliveClient(t, "keepalive-short")
	for attempt := 1; ; attempt++ {
		evs, err := keptAlive(ctx, t, c, replies, uniq("keepalive-short"), lease, rounds)
		if errors.Is(err, client.ErrLeaseLost) && attempt < 3 {
			t.Logf("attempt %d: lease lost after %d extensions (a slow round trip?): %v", attempt, len(evs), err)
			continue
		}
		require.NoError(t, err)
		aheads := make([]time.Duration, len(evs))
		for i, ev := range evs {
			aheads[i] = ahead(ev)
		}
		// The median of the last third: a drift grows round after round,
		// where one slow command's way to the worker puts the next
		// extension's expiry that much further once.
		last := slices.Clone(aheads[len(aheads)*2/3:])
		slices.Sort(last)
		median := last[len(last)/2]
		t.Logf("%d extensions of a %v lease: its expiry past the worker's now at most %v, the last third's median %v", len(evs), lease, slices.Max(aheads), median)
		require.LessOrEqual(t, median, lease+slack, "the worker's expiry stays within a lease of its now")
		return
	}
}

// keepAliveClient is a client named requester, the watch of its replies,
// the test's context and a lock name of its own. The client's first
// command (a query of the lock) has found its reply topic: a grant as slow
// would come late for the short leases of these tests.
func keepAliveClient(t *testing.T, requester string) (*client.Client, *e2e.Watcher, context.Context, string) {
	c := newClient(t, requester)
	replies := env.For(t).Watch(c.ReplyTopic())
	ctx := ctxT(t)
	lock := uniq(requester)
	_, err := c.Query(ctx, lock)
	require.NoError(t, err)
	return c, replies, ctx, lock
}

// keptAlive acquires lock for lease, lets its keep-alive extend it the
// given rounds, and releases it. It returns the extensions' answers, and
// the lease's loss if it was lost first.
func keptAlive(ctx context.Context, t *testing.T, c *client.Client, replies *e2e.Watcher, lock string, lease time.Duration, rounds int) ([]topics.Event, error) {
	l, err := c.Acquire(ctx, lock, client.WithLease(lease))
	if err != nil {
		return nil, err
	}
	evs, err := extendedTimes(ctx, t, c, replies, l, rounds)
	if err != nil {
		return evs, err
	}
	return evs, l.Release(ctx)
}

// extendedTimes waits until the keep-alive of l, c's lease, has extended it
// the given times in all, and returns the extensions' answers, and the
// lease's loss if it was lost first.
func extendedTimes(ctx context.Context, t *testing.T, c *client.Client, replies *e2e.Watcher, l *client.Lease, times int) ([]topics.Event, error) {
	go func() {
		// A query's answer wakes the wait below once the lease is lost.
		select {
		case <-l.Lost():
			_, _ = c.Query(ctx, l.Name)
		case <-ctx.Done():
		}
	}()
	var evs []topics.Event
	replies.WaitFor(t, 20*time.Second, "the keep-alive's extensions", func(rs []e2e.Received) bool {
		evs = extensionsOf(rs, l.Name, 0)
		return len(evs) >= times || l.Err() != nil
	})
	return evs, l.Err()
}

// An extension the worker applied late (its produce held here, as behind a
// broker frozen meanwhile) leaves the local deadline short of the worker's
// expiry by that delay, as the deadline counts the time the answer shows
// from the command's send. The next extension is sized by the worker's
// expiry as that answer showed it, from its read: sized by the deadline,
// it carried the expiry the delay further than a lease ahead.
func TestKeepAliveAfterALateExtensionStaysWithinItsLease(t *testing.T) {
	// The delay under half the lease, or the late answer would leave the
	// deadline behind it; and under a third, the keep-alive's resend.
	const lease, delay, slack = 4500 * time.Millisecond, 1200 * time.Millisecond, 500 * time.Millisecond
	c, replies, ctx, lock := keepAliveClient(t, "keepalive-late")
	l, err := c.Acquire(ctx, lock, client.WithLease(lease))
	require.NoError(t, err)
	_, err = extendedTimes(ctx, t, c, replies, l, 1)
	require.NoError(t, err)
	// The next command is the keep-alive's next extension, a third of the
	// lease after this one.
	held := holdProduces(t, env, env.Names.Commands, delay, 1)
	evs, err := extendedTimes(ctx, t, c, replies, l, 3)
	require.NoError(t, err)
	require.EqualValues(t, 1, held.Load(), "the extension's produce was held")
	for i, ev := range evs[:3] {
		t.Logf("extension %d: the expiry %v past the worker's now", i+1, ahead(ev))
	}
	require.LessOrEqual(t, ahead(evs[2]), lease+slack, "the extension after the late one carried the expiry past a lease ahead")
	require.NoError(t, l.Release(ctx))
}

// Every command's way to the worker takes delay (each produce held, as
// behind a slow or distant broker): a round trip of about 0.29 of the
// lease, under the third the keep-alive holds a lease for. Each extension
// leaves the worker's expiry a lease ahead and the lease held. Sized by the
// worker's end as the answers showed it, less nothing, each came a round
// trip short, and the lease was lost at the second.
func TestKeepAliveHoldsAtARoundTripUnderAThirdOfTheLease(t *testing.T) {
	const lease, delay, rounds, slack = 3 * time.Second, 870 * time.Millisecond, 4, 300 * time.Millisecond
	c, replies, ctx, lock := keepAliveClient(t, "keepalive-round-trip")
	holdProduces(t, env, env.Names.Commands, delay, 0)
	l, err := c.Acquire(ctx, lock, client.WithLease(lease))
	require.NoError(t, err)
	evs, err := extendedTimes(ctx, t, c, replies, l, rounds)
	for i, ev := range evs {
		t.Logf("extension %d: the expiry %v past the worker's now", i+1, ahead(ev))
	}
	require.NoError(t, err, "the lease was lost with every extension answered")
	for _, ev := range evs[1:] {
		require.GreaterOrEqual(t, ahead(ev), lease-slack, "an extension left the expiry short of a lease ahead")
	}
}

// After Extend carried a kept-alive lease far ahead, the keep-alive sends
// no extension (no write, no lock.extended, no max_hold room used) until
// the lease's end is back within a lease from now; then it extends it
// again, no further than a lease ahead, and the lease stays held.
func TestKeepAliveIdleAfterLongExtend(t *testing.T) {
	const lease, extend, slack = 600 * time.Millisecond, 3 * time.Second, 200 * time.Millisecond
	c, replies, ctx, lock := keepAliveClient(t, "keepalive-extend")
	l, err := c.Acquire(ctx, lock, client.WithLease(lease))
	require.NoError(t, err)
	// Right after a keep-alive extension was answered the next is a third
	// of the lease away: Extend and the query come before it.
	replies.WaitFor(t, 20*time.Second, "the keep-alive's first extension", func(rs []e2e.Received) bool {
		return len(extensionsOf(rs, lock, 0)) > 0
	})
	require.NoError(t, l.Extend(ctx, extend))
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	var next topics.Event
	replies.WaitFor(t, extend+10*time.Second, "the keep-alive's extension after Extend", func(rs []e2e.Received) bool {
		evs := extensionsOf(rs, lock, st.Extensions)
		if len(evs) > 0 {
			next = evs[0]
		}
		return len(evs) > 0
	})
	t.Logf("Extend carried the expiry to %v; the keep-alive's next extension came %v before it, carrying it %v ahead",
		st.ExpiresAt.Format(time.StampMilli), st.ExpiresAt.Sub(next.OccurredAt.Time), ahead(next))
	require.LessOrEqual(t, st.ExpiresAt.Sub(next.OccurredAt.Time), lease+slack,
		"no extension until the end is back within a lease")
	require.LessOrEqual(t, ahead(next), lease+slack)
	require.NoError(t, l.Err())
	require.NoError(t, l.Release(ctx))
}

// An Extend answered more than a lease after it was sent (its produce held
// here) leaves the worker's expiry further past the local deadline than the
// keep-alive carries it ahead of now: the keep-alive, which waits until an
// extension would carry the worker's expiry no further than a lease from
// now, sends one all the same once a third of the lease is left by the
// deadline, and the lease stays held, rather than being lost at its
// deadline with the worker's expiry still ahead.
func TestKeepAliveAfterASlowExtendKeepsTheLease(t *testing.T) {
	const lease, delay = 1500 * time.Millisecond, 1800 * time.Millisecond
	c, replies, ctx, lock := keepAliveClient(t, "keepalive-slow-extend")
	l, err := c.Acquire(ctx, lock, client.WithLease(lease))
	require.NoError(t, err)
	// Right after the keep-alive's first extension, the two Extends come
	// before its next: the first carries the end far enough ahead for the
	// second's answer, a lease late, to come before the deadline, and the
	// keep-alive sends nothing until then.
	_, err = extendedTimes(ctx, t, c, replies, l, 1)
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, 3*time.Second))
	held := holdProduces(t, env, env.Names.Commands, delay, 1)
	require.NoError(t, l.Extend(ctx, 2*time.Second))
	require.EqualValues(t, 1, held.Load(), "the second Extend's produce was held")
	evs, err := extendedTimes(ctx, t, c, replies, l, 4)
	require.NoError(t, err, "the keep-alive's extension after the slow Extend")
	t.Logf("the keep-alive's extension after the slow Extend carried the expiry %v past the worker's now", ahead(evs[3]))
	require.NoError(t, l.Release(ctx))
}
