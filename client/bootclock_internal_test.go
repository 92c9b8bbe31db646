package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// movableBoot gives c a boot clock the test moves forward: as after a host
// suspend, when the monotonic clock (the deadline timers') stood still and
// the boot clock did not.
func movableBoot(c *Client) func(time.Duration) {
	var skew atomic.Int64
	c.boot = func() time.Duration { return bootClock() + time.Duration(skew.Load()) }
	return func(d time.Duration) { skew.Store(int64(d)) }
}

// suspendedClient is a bare Client (no watch: the test calls checkBoot)
// whose boot clock the test moves (movableBoot).
func suspendedClient() (*Client, func(time.Duration)) {
	c := &Client{leases: map[int64][]*Lease{}, ended: map[endKey]topics.Event{}, sessions: map[string]*Session{}}
	return c, movableBoot(c)
}

// sentAtTime is a command sent at t, by c's clocks.
func sentAtTime(c *Client, t time.Time) sentAt {
	return sentAt{mono: t, boot: c.bootNow() - time.Since(t)}
}

// leaseOf is newLease's lease, its error left to the test.
func leaseOf(l *Lease, _ error) *Lease { return l }

// grantAt registers a lease of token, granted at now for lease, sent then.
func grantAt(c *Client, token int64, now time.Time, lease time.Duration) *Lease {
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: token, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(lease)), LeaseDuration: lease.Seconds()}
	return leaseOf(c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
		acquireOptions{}, false, sentAtTime(c, now), now))
}

// TestLeasePastItsBootDeadlineIsLost: a lease whose deadline has passed by
// the boot clock but not by the monotonic clock (the host was suspended
// past it: the worker has expired the lease, and may have granted the lock
// to another) is lost at the next boot-clock check, not a suspend later
// when its timer fires.
func TestLeasePastItsBootDeadlineIsLost(t *testing.T) {
	c, suspend := suspendedClient()
	l := grantAt(c, 21, time.Now(), 30*time.Second)
	defer l.lose(ErrReleased)

	require.True(t, c.checkBoot())
	require.NoError(t, l.Err(), "lost before its deadline")

	suspend(60 * time.Second)
	require.True(t, c.checkBoot())
	select {
	case <-l.Lost():
	default:
		t.Fatal("the lease is still believed held after its deadline by the boot clock")
	}
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorIs(t, context.Cause(l.Context()), ErrLeaseLost)
	require.ErrorContains(t, l.Err(), "the "+bootClockName()+" shows its expiry passed")
	require.Empty(t, c.leases)
	require.False(t, c.checkBoot(), "nothing left to watch: the watch stops")
}

// TestSessionPastItsBootDeadlineIsLost: the same for a session, and the
// leases in it with it.
func TestSessionPastItsBootDeadlineIsLost(t *testing.T) {
	c, suspend := suspendedClient()
	now := time.Now()
	s := &Session{ID: "s1", Owner: "me", TTL: 10 * time.Second, c: c, leases: map[*Lease]bool{}, lost: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	s.update(topics.Event{Type: topics.TypeSessionOpened, OccurredAt: topics.Time{Time: now},
		SessionInfo: &topics.SessionInfo{SessionID: s.ID, OwnerID: s.Owner, TTL: 10, ExpiresAt: topics.NewTime(now.Add(10 * time.Second))}}, sentAtTime(c, now))
	s.mu.Unlock()
	c.sessions[s.ID] = s
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 22, Status: topics.StatusAcquired, SessionID: s.ID,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(10 * time.Second)), LeaseDuration: 60}
	l, _ := c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
		acquireOptions{session: s}, false, sentAtTime(c, now), now)
	defer l.lose(ErrReleased)

	require.True(t, c.checkBoot())
	require.NoError(t, s.Err())

	suspend(20 * time.Second)
	c.checkBoot()
	select {
	case <-s.Lost():
	default:
		t.Fatal("the session is still believed open after its deadline by the boot clock")
	}
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.ErrorContains(t, s.Err(), "the "+bootClockName()+" shows its expiry passed")
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorIs(t, l.Err(), ErrSessionLost)
	require.False(t, c.checkBoot(), "nothing left to watch")
}

// TestExtendMovesTheBootDeadline: an extension moves the boot-clock
// deadline with the monotonic one, so a suspend shorter than the extended
// lease's remaining time (but longer than the grant's) does not lose it.
func TestExtendMovesTheBootDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := fakeWorker(t, leaseAnswers(10, 60).by(nil))
	suspend := movableBoot(c)
	l, err := c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	require.NoError(t, l.Extend(ctx, time.Minute))
	suspend(30 * time.Second) // past the grant's 10 s, within the extension's 60 s
	require.True(t, c.checkBoot())
	require.NoError(t, l.Err(), "lost by the grant's boot-clock deadline")
	suspend(70 * time.Second)
	c.checkBoot()
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorContains(t, l.Err(), "the "+bootClockName()+" shows its expiry passed")
}

// TestBootWatchLifecycle: the boot-clock watch starts with the first lease
// registered, once per client; stops when nothing is left to watch, and
// starts again with the next lease; and Close waits for it to stop. The
// test ticks the watch itself.
func TestBootWatchLifecycle(t *testing.T) {
	c, _ := suspendedClient()
	c.closing, c.close = context.WithCancel(context.Background())
	c.bootTicks = make(chan time.Time)
	watching := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.watching
	}
	require.False(t, watching(), "no watch before a lease")
	a, b := grantAt(c, 31, time.Now(), time.Minute), grantAt(c, 32, time.Now(), time.Minute)
	require.True(t, watching())

	a.lose(ErrReleased)
	b.lose(ErrReleased)
	c.bootTicks <- time.Now() // nothing left: the watch ends
	c.ops.Wait()              // the watch was the only operation
	require.False(t, watching(), "the watch ended with nothing to watch")

	d := grantAt(c, 33, time.Now(), time.Minute)
	defer d.lose(ErrReleased)
	require.True(t, watching(), "the next lease starts the watch again")
	// Two ticks taken: the check of the first found a lease left, and the
	// watch went on.
	c.bootTicks <- time.Now()
	c.bootTicks <- time.Now()
	require.True(t, watching())
	c.mu.Lock()
	c.closed = true // as Close does
	c.mu.Unlock()
	c.close()
	c.ops.Wait() // the watch is among the operations Close waits for
	require.False(t, watching())
}

// TestNoBootWatchOnceClosed: a lease registered after Close (a grant read
// while the client closed) starts no watch, which nothing would stop.
func TestNoBootWatchOnceClosed(t *testing.T) {
	c, _ := suspendedClient()
	c.closing, c.close = context.WithCancel(context.Background())
	c.bootTicks = make(chan time.Time)
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.close()
	l := grantAt(c, 41, time.Now(), time.Minute)
	defer l.lose(ErrReleased)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.False(t, c.watching)
}

// bareLease is a lease registered in c without a timer (the test ends it),
// whose local deadlines are mono and boot.
func bareLease(c *Client, token int64, mono time.Time, boot time.Duration) *Lease {
	ctx, cancel := context.WithCancelCause(context.Background())
	l := &Lease{Name: "job", Owner: "me", Token: token, c: c, lost: make(chan struct{}), ctx: ctx, cancel: cancel,
		releasing: make(chan struct{}, 1), deadline: mono, boot: boot}
	c.mu.Lock()
	c.leases[token] = append(c.leases[token], l)
	c.mu.Unlock()
	return l
}

// bareSession is a session registered in c without a timer, whose local
// deadlines are mono and boot.
func bareSession(c *Client, id string, mono time.Time, boot time.Duration) *Session {
	s := &Session{ID: id, Owner: "me", TTL: 10 * time.Second, c: c, leases: map[*Lease]bool{}, lost: make(chan struct{}),
		deadline: mono, boot: boot}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	c.mu.Lock()
	c.sessions[id] = s
	c.mu.Unlock()
	return s
}

// TestBootCheckBlamesASuspendOnlyWhenTheMonotonicClockDisagrees: the boot
// clock's watch, finding a deadline passed by the monotonic clock too (its
// timer not run yet), loses the lease or session with the ordinary
// expiry's error; only one passed by the boot clock alone blames a suspend.
func TestBootCheckBlamesASuspendOnlyWhenTheMonotonicClockDisagrees(t *testing.T) {
	c, _ := suspendedClient()
	past, future := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
	bootPast := c.bootNow() - time.Second

	both, bootOnly := bareLease(c, 51, past, bootPast), bareLease(c, 52, future, bootPast)
	sBoth, sBootOnly := bareSession(c, "s-both", past, bootPast), bareSession(c, "s-boot", future, bootPast)
	c.checkBoot()

	require.ErrorContains(t, both.Err(), "reached its expiry without a confirmed extension")
	require.NotContains(t, both.Err().Error(), bootClockName())
	require.ErrorContains(t, bootOnly.Err(), "the "+bootClockName()+" shows its expiry passed without a confirmed extension, the monotonic clock not ("+bootClockAhead()+")")
	require.ErrorContains(t, sBoth.Err(), "reached its expiry without a confirmed keep-alive")
	require.NotContains(t, sBoth.Err().Error(), bootClockName())
	require.ErrorContains(t, sBootOnly.Err(), "the "+bootClockName()+" shows its expiry passed without a confirmed keep-alive, the monotonic clock not")
}

// TestExpiryRecheckedAsItEnds: a deadline timer (or boot-clock check) that
// acts after an extension's answer moved both deadlines on loses nothing:
// the deadlines are looked at again as the lease or session would end.
func TestExpiryRecheckedAsItEnds(t *testing.T) {
	c, _ := suspendedClient()
	future, bootFuture := time.Now().Add(time.Hour), c.bootNow()+time.Hour
	l := bareLease(c, 61, future, bootFuture)
	defer l.lose(ErrReleased)
	s := bareSession(c, "s-later", future, bootFuture)
	defer s.lose(ErrSessionClosed)
	l.deadlinePassed() // its timer, fired just before the extension's update
	s.deadlinePassed()
	require.NoError(t, l.Err(), "lost by a deadline an extension moved")
	require.NoError(t, s.Err(), "lost by a deadline a keep-alive moved")
}

// TestGrantReadPastItsDeadlineIsReturnedLost: a grant, an extension or a
// session.opened read after the host slept through the lease or session
// (the boot clock moved on while the command was on its way) is not
// returned as held: Acquire, Extend and NewSession return its loss, and
// give it back (a release by the lease's token, a session close), as the
// worker may hold it for nobody.
func TestGrantReadPastItsDeadlineIsReturnedLost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var skew atomic.Int64 // the suspend, while the command was on its way
	var seen recorder
	a := leaseAnswers(30, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if cmd.LockName == "late" {
			skew.Add(int64(time.Minute))
		}
		return one(granted(cmd, topics.TypeAcquired, 30))
	}
	a[topics.OpExtend] = func(_ context.Context, cmd topics.Command) []topics.Event {
		skew.Add(int64(time.Minute))
		return one(granted(cmd, topics.TypeExtended, 30))
	}
	a[topics.OpSessionOpen] = func(_ context.Context, cmd topics.Command) []topics.Event {
		skew.Add(int64(time.Minute))
		return one(sessionEvent(cmd, topics.TypeSessionOpened, 30))
	}
	a[topics.OpSessionClose] = sessionAnswers(topics.TypeSessionClosed, 30)
	c := fakeWorker(t, a.by(&seen))
	c.boot = func() time.Duration { return bootClock() + time.Duration(skew.Load()) }
	lostHere := "the " + bootClockName() + " shows its expiry passed"
	released := func(start int) topics.Command {
		t.Helper()
		rels := seen.of(topics.OpRelease, start)
		if len(rels) == 0 {
			t.Fatalf("no release among %v", seen.since(start))
		}
		return rels[0]
	}

	start := seen.len()
	l, err := c.Acquire(ctx, "late", WithoutKeepAlive())
	require.Nil(t, l)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, lostHere)
	rel := released(start)
	require.NotNil(t, rel.FencingToken, "released by the grant's token")
	require.Equal(t, int64(1), *rel.FencingToken)
	c.mu.Lock()
	require.Empty(t, c.leases)
	c.mu.Unlock()

	l, err = c.Acquire(ctx, "job", WithoutKeepAlive())
	require.NoError(t, err)
	start = seen.len()
	err = l.Extend(ctx, 30*time.Second)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, lostHere)
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	rel = released(start)
	require.Equal(t, l.Token, *rel.FencingToken)

	start = seen.len()
	s, err := c.NewSession(ctx, 30*time.Second)
	require.Nil(t, s)
	require.ErrorIs(t, err, ErrSessionLost)
	require.ErrorContains(t, err, lostHere)
	require.Equal(t, []string{topics.OpSessionOpen, topics.OpSessionClose}, seen.since(start))
	c.mu.Lock()
	require.Empty(t, c.sessions)
	c.mu.Unlock()
}

// openedSession is a session of c opened at now for ttl, registered, with
// its deadline timer running, as NewSession leaves it.
func openedSession(c *Client, id string, now time.Time, ttl time.Duration) *Session {
	s := &Session{ID: id, Owner: "me", TTL: ttl, c: c, leases: map[*Lease]bool{}, lost: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	s.update(topics.Event{Type: topics.TypeSessionOpened, OccurredAt: topics.Time{Time: now},
		SessionInfo: &topics.SessionInfo{SessionID: s.ID, OwnerID: s.Owner, TTL: ttl.Seconds(), ExpiresAt: topics.NewTime(now.Add(ttl))}}, sentAtTime(c, now))
	s.timer = time.AfterFunc(time.Until(s.deadline), s.deadlinePassed)
	s.mu.Unlock()
	c.mu.Lock()
	c.sessions[s.ID] = s
	c.mu.Unlock()
	return s
}

// TestSurvivedSuspendPullsTheMonotonicDeadlineIn: after a suspend shorter
// than the time left (the lease and session survive it), the monotonic
// deadline, which stood still during the suspend, is later than the boot
// clock's by the suspend; the boot-clock check pulls it, and its timer, in
// to the boot clock's, so that the lease or session ends at its real end,
// not up to a bootCheckInterval later at the next check.
func TestSurvivedSuspendPullsTheMonotonicDeadlineIn(t *testing.T) {
	c, suspend := suspendedClient()
	now := time.Now()
	l := grantAt(c, 71, now, 30*time.Second)
	defer l.lose(ErrReleased)
	s := openedSession(c, "s-pulled", now, 30*time.Second)
	defer s.lose(ErrSessionClosed)
	left := func(mu *sync.Mutex, deadline *time.Time) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return time.Until(*deadline)
	}

	suspend(20 * time.Second) // 10 s left by the boot clock, 30 s by the monotonic one
	require.True(t, c.checkBoot())
	require.NoError(t, l.Err())
	require.NoError(t, s.Err())
	// 10 s less the time since now, which a stalled machine may make
	// seconds: more than 5 s is not pulled in by another 20 s.
	require.LessOrEqual(t, left(&l.mu, &l.deadline), 10*time.Second, "the lease's monotonic deadline not pulled in")
	require.Greater(t, left(&l.mu, &l.deadline), 5*time.Second, "pulled in too far")
	require.LessOrEqual(t, left(&s.mu, &s.deadline), 10*time.Second, "the session's monotonic deadline not pulled in")
	require.Greater(t, left(&s.mu, &s.deadline), 5*time.Second, "pulled in too far")

	// A boot clock behind the monotonic deadline moves nothing back out.
	suspend(0)
	require.True(t, c.checkBoot())
	require.LessOrEqual(t, left(&l.mu, &l.deadline), 10*time.Second)
	require.LessOrEqual(t, left(&s.mu, &s.deadline), 10*time.Second)

	// Their timers were moved too: about 300 ms left by the boot clock
	// (counted from the deadlines recorded, so that a slow run does not
	// pass them before the check), and both end then, by their timers,
	// with no further check.
	l.mu.Lock()
	lBoot := l.boot
	l.mu.Unlock()
	s.mu.Lock()
	sBoot := s.boot
	s.mu.Unlock()
	suspend(min(lBoot, sBoot) - 300*time.Millisecond - bootClock())
	require.True(t, c.checkBoot())
	for what, lost := range map[string]<-chan struct{}{"lease": l.Lost(), "session": s.Lost()} {
		select {
		case <-lost:
		case <-time.After(10 * time.Second):
			t.Fatalf("the %s's timer was not moved to its boot deadline", what)
		}
	}
	require.ErrorContains(t, l.Err(), "reached its expiry without a confirmed extension")
	require.ErrorContains(t, s.Err(), "reached its expiry without a confirmed keep-alive")
}

// TestGrantInASessionPastItsDeadlineIsReturnedLost: a grant WithSession
// read after the host slept through the session's deadline (the boot clock
// moved on while the acquire was on its way) is not returned held: the
// session is lost, and Acquire returns the lease's loss, and gives the
// grant back, as for a grant read past a lease's own deadline. So is one
// read after the session's watch found it lost already.
func TestGrantInASessionPastItsDeadlineIsReturnedLost(t *testing.T) {
	for _, lostFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("session lost before the grant is read %v", lostFirst), func(t *testing.T) {
			grantInASessionPastItsDeadline(t, lostFirst)
		})
	}
}

func grantInASessionPastItsDeadline(t *testing.T, lostFirst bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var skew atomic.Int64
	var seen recorder
	var sess atomic.Pointer[Session]
	var c *Client
	a := leaseAnswers(30, 30)
	a[topics.OpSessionOpen] = sessionAnswers(topics.TypeSessionOpened, 30)
	a[topics.OpSessionClose] = sessionAnswers(topics.TypeSessionClosed, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		skew.Add(int64(time.Minute)) // past the session's 30 s
		if lostFirst {
			sess.Load().checkBoot(c.bootNow())
		}
		ev := granted(cmd, topics.TypeAcquired, 30)
		ev.LockInfo.SessionID = cmd.SessionID
		return one(ev)
	}
	c = fakeWorker(t, a.by(&seen))
	c.boot = func() time.Duration { return bootClock() + time.Duration(skew.Load()) }
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	sess.Store(s)
	defer s.Close(ctx)

	start := seen.len()
	l, err := c.Acquire(ctx, "job", WithSession(s))
	require.Nil(t, l, "a grant read past its session's deadline returned held")
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorIs(t, err, ErrSessionLost)
	require.ErrorContains(t, err, "the "+bootClockName()+" shows its expiry passed")
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	rels := seen.of(topics.OpRelease, start)
	require.NotEmpty(t, rels, "not given back: %v", seen.since(start))
	rel := rels[len(rels)-1]
	require.NotNil(t, rel.FencingToken, "released by the grant's token")
	require.Equal(t, int64(1), *rel.FencingToken)
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(t, c.leases)
	require.Empty(t, c.sessions)
}

// TestKeepAliveReadPastItsDeadlineLosesTheSession: a session keep-alive's
// answer read after the host slept through the session's new deadline (the
// boot clock moved on while it was on its way) loses the session, as a
// late extension loses a lease, and closes it, as the worker applied the
// keep-alive.
func TestKeepAliveReadPastItsDeadlineLosesTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := sessionsOnly(t, &seen)
	suspend := movableBoot(c)
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)

	// In time: kept, not lost.
	sent := c.sentNow()
	s.keptAlive(sessionEvent(s.command(topics.OpSessionKeepAlive), topics.TypeSessionKeptAlive, 30), sent)
	require.NoError(t, s.Err())

	start := seen.len()
	sent = c.sentNow()
	suspend(time.Minute) // while the keep-alive was on its way
	s.keptAlive(sessionEvent(s.command(topics.OpSessionKeepAlive), topics.TypeSessionKeptAlive, 30), sent)
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.ErrorContains(t, s.Err(), "the "+bootClockName()+" shows its expiry passed")
	require.Equal(t, []string{topics.OpSessionClose}, seen.since(start), "the session the keep-alive kept is not closed")
	c.mu.Lock()
	defer c.mu.Unlock()
	require.Empty(t, c.sessions)
}

// TestCampaignGoesOnAfterALateGrant: a campaign whose grant is read past
// the lease's local deadline (lost, and given back) campaigns again,
// rather than fail with the loss.
func TestCampaignGoesOnAfterALateGrant(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var skew atomic.Int64
	var acquires atomic.Int32
	var seen recorder
	a := leaseAnswers(30, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		if acquires.Add(1) == 1 {
			skew.Add(int64(time.Minute)) // the first grant is read late
		}
		return one(granted(cmd, topics.TypeAcquired, 30))
	}
	c := fakeWorker(t, a.by(&seen))
	c.boot = func() time.Duration { return bootClock() + time.Duration(skew.Load()) }
	ld, err := NewElection(c, "leader").Campaign(ctx, "me")
	require.NoError(t, err)
	defer ld.Resign(ctx)
	require.NoError(t, ld.Err())
	require.Equal(t, int32(2), acquires.Load())
	require.Equal(t, []string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire}, seen.since(0), "the late grant given back, then a new campaign")
}

// TestCampaignReturnsAGrantLateByTheMonotonicClock: a campaign whose every
// grant is read past the lease's local deadline by the monotonic clock too
// (a lease shorter than the round trip) returns the loss at the first,
// given back, rather than acquire and give back in a loop.
func TestCampaignReturnsAGrantLateByTheMonotonicClock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	a := leaseAnswers(30, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := granted(cmd, topics.TypeAcquired, 30)
		ev.LockInfo.ExpiresAt = topics.NewTimePtr(ev.OccurredAt.Add(-time.Second)) // over when read
		return one(ev)
	}
	c := fakeWorker(t, a.by(&seen))
	ld, err := NewElection(c, "leader").Campaign(ctx, "me")
	require.Nil(t, ld)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, "reached its expiry")
	require.NoError(t, ctx.Err(), "the campaign ran until its context ended")
	require.Equal(t, []string{topics.OpAcquire, topics.OpRelease}, seen.since(0), "campaigned again after a grant late by the monotonic clock")
}

// TestCampaignStopsAfterThreeLateGrants: a campaign whose grants are read
// late by the boot clock alone, every one (the wall-clock fallback
// stepping on, say), gives up with the loss after the third in a row.
func TestCampaignStopsAfterThreeLateGrants(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var skew atomic.Int64
	var seen recorder
	a := leaseAnswers(30, 30)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		skew.Add(int64(time.Minute)) // every grant read late
		return one(granted(cmd, topics.TypeAcquired, 30))
	}
	c := fakeWorker(t, a.by(&seen))
	c.boot = func() time.Duration { return bootClock() + time.Duration(skew.Load()) }
	ld, err := NewElection(c, "leader").Campaign(ctx, "me")
	require.Nil(t, ld)
	require.ErrorIs(t, err, ErrLeaseLost)
	require.ErrorContains(t, err, "the "+bootClockName()+" shows its expiry passed")
	require.NoError(t, ctx.Err())
	require.Equal(t, []string{topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpRelease, topics.OpAcquire, topics.OpRelease},
		seen.since(0), "not three grants, each given back")
}

// TestOutOfOrderExtensionMovesNothingBack: an extension's answer read after
// a later extension's (Extend and the keep-alive overlapping), of a lower
// revision of the lock, leaves the later answer's deadlines, on both
// clocks, and its lock_info; one of a newer revision is applied, even with
// an earlier expires_at (the owner renewed the lease into a session and
// out again: its own lease counts from the renewal); one of the same
// revision keeps the later estimate.
func TestOutOfOrderExtensionMovesNothingBack(t *testing.T) {
	c, _ := suspendedClient()
	now := time.Now().Truncate(time.Microsecond) // as the events carry it
	base := c.bootNow()                          // now, by the boot clock
	l := grantAt(c, 81, now, 30*time.Second)
	defer l.lose(ErrReleased)
	extended := func(sent time.Time, expires time.Duration, revision int64) {
		info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 81, Status: topics.StatusAcquired,
			AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(expires)), LeaseDuration: 30,
			Revision: revision}
		l.mu.Lock()
		l.update(topics.Event{Type: topics.TypeExtended, LockInfo: info, OccurredAt: topics.Time{Time: now}},
			sentAt{mono: sent, boot: base + sent.Sub(now)}, now, false)
		l.mu.Unlock()
	}
	state := func() (time.Time, time.Duration) {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.deadline, l.boot
	}
	grantMono, grantBoot := state()
	require.False(t, grantMono.IsZero(), "the grant set no monotonic deadline")
	require.NotZero(t, grantBoot, "the grant set no boot deadline")

	extended(now, 90*time.Second, 3) // the later extension's answer, read first
	mono, boot := state()
	require.Equal(t, now.Add(90*time.Second), mono)
	require.Equal(t, base+90*time.Second, boot)
	require.Greater(t, boot, grantBoot)
	require.True(t, mono.After(grantMono))

	extended(now.Add(-time.Second), 60*time.Second, 2) // the earlier one's, read last
	gotMono, gotBoot := state()
	require.Equal(t, mono, gotMono, "the monotonic deadline moved back")
	require.Equal(t, boot, gotBoot, "the boot deadline moved back")
	require.WithinDuration(t, now.Add(90*time.Second), l.ExpiresAt(), 0, "expires_at moved back")
	require.Equal(t, int64(3), l.Info().Revision, "a stale answer's lock_info applied")

	extended(now, 120*time.Second, 4) // a later one still moves them on
	gotMono, gotBoot = state()
	require.Equal(t, mono.Add(30*time.Second), gotMono)
	require.Equal(t, boot+30*time.Second, gotBoot)
	require.WithinDuration(t, now.Add(120*time.Second), l.ExpiresAt(), 0)

	// A newer revision with an earlier expires_at: the worker's expiry
	// moved back (a renewal into a session and out again). Applied.
	extended(now, 100*time.Second, 6)
	gotMono, gotBoot = state()
	require.Equal(t, now.Add(100*time.Second), gotMono, "a newer answer's monotonic deadline discarded")
	require.Equal(t, base+100*time.Second, gotBoot, "a newer answer's boot deadline discarded")
	require.WithinDuration(t, now.Add(100*time.Second), l.ExpiresAt(), 0, "a newer answer's expires_at discarded")
	require.Equal(t, int64(6), l.Info().Revision)

	// The same revision again (an answer to a retry, sent earlier): the
	// later estimate is kept.
	extended(now.Add(-time.Second), 100*time.Second, 6)
	gotMono, gotBoot = state()
	require.Equal(t, now.Add(100*time.Second), gotMono, "the same revision's earlier estimate won")
	require.Equal(t, base+100*time.Second, gotBoot)

	// A worker from before revisions (0): an answer of an earlier
	// expires_at, read out of order, leaves lock_info as it was, so
	// ExpiresAt (and the room max_hold leaves) does not move back.
	extended(now, 130*time.Second, 0)
	require.WithinDuration(t, now.Add(130*time.Second), l.ExpiresAt(), 0)
	extended(now, 110*time.Second, 0)
	require.WithinDuration(t, now.Add(130*time.Second), l.ExpiresAt(), 0, "an older worker's stale answer moved expires_at back")
}

// TestPullInSkipsTinyMoves: pullIn leaves a deadline nearer than the boot
// clock's by less than pullInMin as it is (the clocks' rates differ a
// little: no timer reset at every check for that), and moves one nearer
// by more.
func TestPullInSkipsTinyMoves(t *testing.T) {
	now := time.Now()
	d := now.Add(10 * time.Second)
	pullInAt(now, &d, nil, 10*time.Second-pullInMin/2)
	require.Equal(t, now.Add(10*time.Second), d, "moved by less than pullInMin")
	pullInAt(now, &d, nil, 10*time.Second+time.Second)
	require.Equal(t, now.Add(10*time.Second), d, "moved out")
	pullInAt(now, &d, nil, 10*time.Second-2*pullInMin)
	require.Equal(t, now.Add(10*time.Second-2*pullInMin), d, "not pulled in")
}

// TestAnswerSentBeforeASuspendIsPulledIn: an extension's or keep-alive's
// answer whose command was sent before a suspend (the boot clock moved on
// while it was on its way, the monotonic clock not) sets a monotonic
// deadline a suspend later than the boot clock's; the update pulls it in
// at once, not at the next boot-clock check.
func TestAnswerSentBeforeASuspendIsPulledIn(t *testing.T) {
	c, _ := suspendedClient()
	now := time.Now()
	l := grantAt(c, 91, now, 5*time.Second)
	defer l.lose(ErrReleased)
	s := openedSession(c, "s-sent-before", now, 5*time.Second)
	defer s.lose(ErrSessionClosed)
	// Sent 20 s before now by the boot clock, just now by the monotonic
	// one, answered now with 30 s to go: 10 s left by the boot clock.
	sent := sentAt{mono: time.Now(), boot: c.bootNow() - 20*time.Second}
	at := time.Now()
	info := &topics.LockInfo{LockName: "job", OwnerID: "me", FencingToken: 91, Status: topics.StatusAcquired,
		AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(at.Add(30 * time.Second)), LeaseDuration: 30}
	l.mu.Lock()
	l.update(topics.Event{Type: topics.TypeExtended, LockInfo: info, OccurredAt: topics.Time{Time: at}}, sent, at, false)
	lLeft := time.Until(l.deadline)
	l.mu.Unlock()
	s.mu.Lock()
	s.update(topics.Event{Type: topics.TypeSessionKeptAlive, OccurredAt: topics.Time{Time: at},
		SessionInfo: &topics.SessionInfo{SessionID: s.ID, OwnerID: s.Owner, TTL: 30, ExpiresAt: topics.NewTime(at.Add(30 * time.Second))}}, sent)
	sLeft := time.Until(s.deadline)
	s.mu.Unlock()
	// 10 s less the time since sent, which a stalled machine may make
	// seconds: more than 5 s is not pulled in by another 20 s.
	require.LessOrEqual(t, lLeft, 10*time.Second, "the lease's monotonic deadline not pulled in")
	require.Greater(t, lLeft, 5*time.Second, "pulled in too far")
	require.LessOrEqual(t, sLeft, 10*time.Second, "the session's monotonic deadline not pulled in")
	require.Greater(t, sLeft, 5*time.Second, "pulled in too far")
	require.NoError(t, l.Err())
	require.NoError(t, s.Err())
}

// TestKeepAliveInFlightWhenLostClosesTheSession: a session lost here (its
// deadline passed, by the boot clock) while a keep-alive was on its way,
// which the worker may have applied, is closed, best effort, whether the
// keep-alive then fails or is answered; one the worker ended
// (session.expired) is not.
func TestKeepAliveInFlightWhenLostClosesTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := sessionsOnly(t, &seen)
	suspend := movableBoot(c)
	var skew time.Duration
	lostMeanwhile := func() (*Session, sentAt) {
		t.Helper()
		s, err := c.NewSession(ctx, 30*time.Second)
		require.NoError(t, err)
		sent := c.sentNow()
		skew += time.Minute
		suspend(skew) // while the keep-alive was on its way
		c.checkBoot()
		require.ErrorIs(t, s.Err(), ErrSessionLost)
		return s, sent
	}

	s, sent := lostMeanwhile()
	start := seen.len()
	s.keepAliveAnswered(topics.Event{}, context.Cause(s.Context()), sent)
	require.Equal(t, []string{topics.OpSessionClose}, seen.since(start), "a failed keep-alive of a session lost meanwhile: not closed")

	s, sent = lostMeanwhile()
	start = seen.len()
	s.keepAliveAnswered(sessionEvent(s.command(topics.OpSessionKeepAlive), topics.TypeSessionKeptAlive, 30), nil, sent)
	require.Equal(t, []string{topics.OpSessionClose}, seen.since(start), "a keep-alive answered after the session was lost: not closed")

	// The keep-alive's context ends at the deadline, before the deadline's
	// timer has lost the session: the failure loses it, and closes it.
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	sent = c.sentNow()
	s.mu.Lock()
	s.timer.Stop()
	s.deadline = time.Now().Add(-time.Millisecond)
	s.mu.Unlock()
	require.NoError(t, s.Err())
	start = seen.len()
	s.keepAliveAnswered(topics.Event{}, context.DeadlineExceeded, sent)
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.Equal(t, []string{topics.OpSessionClose}, seen.since(start), "a keep-alive cut short by the deadline, its timer not run yet: not closed")

	s, err = c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	sent = c.sentNow()
	c.routeSession(sessionEvent(s.command(topics.OpSessionKeepAlive), topics.TypeSessionExpired, 30))
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	start = seen.len()
	s.keepAliveAnswered(topics.Event{}, context.Cause(s.Context()), sent)
	require.Empty(t, seen.since(start), "a session the worker ended closed")
}

// sessionsOnly is a client whose stand-in worker opens and closes 30 s
// sessions and records every command in seen.
func sessionsOnly(t *testing.T, seen *recorder) *Client {
	return fakeWorker(t, answers{
		topics.OpSessionOpen:  sessionAnswers(topics.TypeSessionOpened, 30),
		topics.OpSessionClose: sessionAnswers(topics.TypeSessionClosed, 30),
	}.by(seen))
}
