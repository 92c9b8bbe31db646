package client

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// campaignAnswers answers a campaign's commands as the worker does while
// another candidate leads: the first acquire, the try, is refused
// LOCK_HELD; the acquire in the campaign's session, waiting, is answered
// by inLine; every later acquire by later.
func campaignAnswers(inLine, later func(cmd topics.Command) []topics.Event) answers {
	var acquires atomic.Int32
	a := leaseAnswers(30, 30)
	a[topics.OpSessionOpen] = sessionAnswers(topics.TypeSessionOpened, 30)
	a[topics.OpSessionClose] = sessionAnswers(topics.TypeSessionClosed, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		switch {
		case acquires.Add(1) == 1:
			return one(rejectedEvent(cmd, topics.CodeLockHeld))
		case cmd.SessionID != "":
			return inLine(cmd)
		}
		return later(cmd)
	}
	return a
}

// grantedInLine is the grant of the waiting acquire cmd, after its
// lock.queued.
func grantedInLine(cmd topics.Command) []topics.Event {
	g := granted(cmd, topics.TypeAcquired, 30)
	g.LockInfo.SessionID = cmd.SessionID
	return []topics.Event{queuedEvent(cmd), g}
}

// A campaign granted after waiting in its session renews the lease out of
// the session (the same token), then closes the session: its Leadership
// has a lease of its own, kept alive by extensions.
func TestCampaignRenewsItsGrantOutOfItsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := fakeWorker(t, campaignAnswers(grantedInLine, func(cmd topics.Command) []topics.Event {
		return one(granted(cmd, topics.TypeAcquired, 30))
	}).by(&seen))
	ld, err := NewElection(c, "leader").Campaign(ctx, "me", WithLease(30*time.Second))
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpAcquire, topics.OpSessionOpen, topics.OpAcquire, topics.OpAcquire, topics.OpSessionClose},
		seen.since(0))
	renewal := seen.of(topics.OpAcquire, 0)[2]
	require.Empty(t, renewal.SessionID, "renewed without the session")
	require.Zero(t, renewal.WaitTimeout, "not to wait")
	require.Equal(t, seen.of(topics.OpSessionOpen, 0)[0].OwnerID, renewal.OwnerID, "by the session's owner")
	require.InDelta(t, 30, seen.of(topics.OpSessionOpen, 0)[0].TTL, 0, "the session's TTL is the lease")
	require.Nil(t, ld.session, "a lease of its own")
	require.NoError(t, ld.Extend(ctx, 0))
	require.NoError(t, ld.Resign(ctx))
}

// A campaign given up while the renewal of its grant is unanswered (it may
// have been applied, or not) releases the lease by its token, in its
// session or out of it, and closes the session: the worker holds nothing
// for it.
func TestCampaignGivenUpAtItsRenewalReleasesTheGrant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cctx, giveUp := context.WithCancel(ctx)
	defer giveUp()
	var seen recorder
	c := fakeWorker(t, campaignAnswers(grantedInLine, func(topics.Command) []topics.Event {
		giveUp()
		return nil
	}).by(&seen))
	_, err := NewElection(c, "leader").Campaign(cctx, "me")
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, []string{topics.OpAcquire, topics.OpSessionOpen, topics.OpAcquire, topics.OpAcquire, topics.OpRelease, topics.OpSessionClose},
		seen.since(0))
	release := seen.of(topics.OpRelease, 0)[0]
	require.NotNil(t, release.FencingToken)
	require.Equal(t, int64(1), *release.FencingToken, "released by the grant's token")
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(t, c.leases)
	require.Empty(t, c.sessions)
}

// A campaign whose session ends while it waits (the worker expired it:
// the keep-alives went unanswered for its TTL) is withdrawn from the line
// by the session's end, and campaigns again.
func TestCampaignLostInLineCampaignsAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := fakeWorker(t, campaignAnswers(func(cmd topics.Command) []topics.Event {
		// The session's end, read before the wait's withdrawal.
		expired := sessionEvent(cmd, topics.TypeSessionExpired, 30)
		expired.RequestID, expired.Operation = "another", topics.OpExpire
		withdrawn := topics.NewEvent(topics.TypeWithdrawn, cmd.Operation, cmd.RequestID, time.Now())
		withdrawn.Reason = topics.ReasonSessionExpired
		return []topics.Event{queuedEvent(cmd), expired, withdrawn}
	}, func(cmd topics.Command) []topics.Event {
		return one(granted(cmd, topics.TypeAcquired, 30))
	}).by(&seen))
	ld, err := NewElection(c, "leader").Campaign(ctx, "me")
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpAcquire, topics.OpSessionOpen, topics.OpAcquire, topics.OpAcquire}, seen.since(0),
		"the lost session not closed; the lock taken by the next round")
	require.NoError(t, ld.Resign(ctx))
}

// A campaign's grant lost while the close of its session goes unanswered
// (the replica of the session's partition stalled, the lease's extensions
// with it) is never returned as a Leadership: the close is waited for no
// longer than a reply, and a lease lost by then is a late grant, given back,
// and the campaign goes on.
func TestCampaignDoesNotReturnAGrantLostWhileItsSessionCloses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var renewals atomic.Int32
	a := campaignAnswers(grantedInLine, func(cmd topics.Command) []topics.Event {
		if renewals.Add(1) == 1 {
			return one(granted(cmd, topics.TypeAcquired, 0.5)) // lost before the close's reply wait ends
		}
		return one(granted(cmd, topics.TypeAcquired, 30))
	})
	a[topics.OpSessionClose] = func(context.Context, topics.Command) []topics.Event { return nil }
	a[topics.OpExtend] = func(context.Context, topics.Command) []topics.Event { return nil }
	var seen recorder
	c, _ := fakeWorkerWith(t, fakeOpts{config: func(c *Config) { c.RequestTimeout = 4 * time.Second }}, a.by(&seen))
	ld, err := NewElection(c, "leader").Campaign(ctx, "me", WithLease(30*time.Second))
	require.NoError(t, err)
	require.NoError(t, ld.Err(), "a Leadership is returned live")
	require.Equal(t, int32(2), renewals.Load(), "campaigned again after the grant lost")
}
