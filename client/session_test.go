package client_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/client"
	"github.com/omninode/lockworker/internal/e2e"
	"github.com/omninode/lockworker/topics"
)

// waiters queues cl for each lock and returns the channels of their grants:
// it returns once every acquire is queued.
func waiters(t *testing.T, ctx context.Context, cl *client.Client, locks []string) []chan *client.Lease {
	t.Helper()
	var grants []chan *client.Lease
	for _, lock := range locks {
		queued, granted := make(chan int, 1), make(chan *client.Lease, 1)
		go func() {
			l, err := cl.Acquire(ctx, lock, client.OnQueued(func(p int) { queued <- p }))
			if err != nil {
				t.Errorf("acquiring %s: %v", lock, err)
			}
			granted <- l
		}()
		select {
		case <-queued:
		case <-ctx.Done():
			t.Fatalf("%s never queued", lock)
		}
		grants = append(grants, granted)
	}
	return grants
}

// The owner of a session dies (its client stops without closing the
// session, so no keep-alive comes): once the session expires (ttl after its
// last keep-alive; the contract's 1 s more is lockbench's to measure) every
// lock it held is granted to the next waiter, and the session and its
// leases know they are lost once their deadline passes.
func TestSessionOwnerDiesLocksFreeWithinTTL(t *testing.T) {
	ctx := ctxT(t)
	const ttl = 2 * time.Second
	owner, next := newClient(t, "sess-dead"), newClient(t, "sess-next")
	s, err := owner.NewSession(ctx, ttl)
	require.NoError(t, err)
	require.Equal(t, ttl, s.TTL)
	locks := []string{uniq("sess-a"), uniq("sess-b"), uniq("sess-c")}
	var leases []*client.Lease
	for _, lock := range locks {
		// A short lease: a session's lease has no expiry of its own.
		l, err := owner.Acquire(ctx, lock, client.WithSession(s), client.WithLease(200*time.Millisecond))
		require.NoError(t, err)
		require.Equal(t, s.ID, l.Info().SessionID)
		leases = append(leases, l)
	}
	grants := waiters(t, ctx, next, locks)
	// Outlive the leases' own durations and the session's first expiry:
	// the keep-alive holds them all.
	first := s.ExpiresAt()
	require.Eventually(t, func() bool { return s.ExpiresAt().After(first.Add(ttl)) }, 3*ttl, 10*time.Millisecond)
	for i, l := range leases {
		require.NoError(t, l.Err())
		st, err := next.Query(ctx, locks[i])
		require.NoError(t, err)
		require.Equal(t, client.StatusAcquired, st.Status)
		require.Equal(t, s.Owner, st.Owner)
		require.Equal(t, s.ID, st.Info.SessionID)
	}

	replies := env.For(t).Watch(owner.ReplyTopic())
	require.NoError(t, owner.Close()) // no keep-alive from now on, no close
	// The session ends, and its locks are granted once it has: on the
	// database's clock, each grant's acquired_at is not before the
	// session's expires_at (session.expired tells it), each with a greater
	// token, within the waiters' 20 s. How soon after (the contract's 1 s
	// from the last keep-alive the worker applied) is lockbench's to
	// measure: a loaded machine delays the scheduler's transaction, which
	// this test must not fail for.
	expired := replies.WaitEvent(t, "session.expired", func(r e2e.Received) bool {
		return r.Event.Type == topics.TypeSessionExpired && r.Event.SessionInfo != nil && r.Event.SessionInfo.SessionID == s.ID
	}).Event.SessionInfo.ExpiresAt.Time
	for i, g := range grants {
		select {
		case l := <-g:
			require.NotNil(t, l)
			require.Greater(t, l.Token, leases[i].Token)
			t.Logf("%s granted %s after the session's expiry", locks[i], l.Info().AcquiredAt.Time.Sub(expired).Round(time.Millisecond))
			require.False(t, l.Info().AcquiredAt.Time.Before(expired), "%s granted at %s, before the session expired at %s",
				locks[i], l.Info().AcquiredAt.Time, expired)
			require.NoError(t, l.Release(ctx))
		case <-time.After(20 * time.Second):
			t.Fatalf("%s not granted after the owner's death", locks[i])
		}
	}
	<-s.Lost()
	require.ErrorIs(t, s.Err(), client.ErrSessionLost)
	for _, l := range leases {
		<-l.Lost()
		require.ErrorIs(t, l.Err(), client.ErrLeaseLost)
		require.ErrorIs(t, l.Err(), client.ErrSessionLost)
	}
}

// A keep-alive left without an answer (here the command is lost in
// transit; a lost answer is the same to the client) is followed by another
// before the session's local deadline, though exchange would send it again
// only after ReplyTimeout (5 s, more than the 3 s TTL here): the session,
// and its lease, live on. The client's writes are not idempotent, so that
// the broker takes its next command after the lost one at once, rather
// than refuse it as out of sequence until kgo starts a new producer ID.
func TestSessionKeepAliveUnanswered(t *testing.T) {
	ctx := ctxT(t)
	const ttl = 3 * time.Second
	c := newClient(t, "sess-unanswered", func(cfg *client.Config) {
		cfg.KafkaOpts = append(cfg.KafkaOpts, kgo.DisableIdempotentWrite())
	})
	s, err := c.NewSession(ctx, ttl)
	require.NoError(t, err)
	lock := uniq("sess-unanswered")
	l, err := c.Acquire(ctx, lock, client.WithSession(s))
	require.NoError(t, err)

	dropped := dropNextProduce(t, env, env.Names.Commands) // a keep-alive: nothing else is asked
	require.Eventually(t, func() bool { return dropped.Load() == 1 }, 4*ttl, 5*time.Millisecond, "no keep-alive was dropped")
	before := s.ExpiresAt() // the last answered keep-alive's
	require.Eventually(t, func() bool { return s.Err() != nil || s.ExpiresAt().After(before) }, 4*ttl, 10*time.Millisecond,
		"no keep-alive answered, nor the session lost")
	require.NoError(t, s.Err(), "lost for one keep-alive left unanswered")
	require.NoError(t, l.Err())
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st.Status)
	require.Equal(t, s.ID, st.Info.SessionID)
	require.NoError(t, s.Close(ctx))
}

// Close releases every lease and withdraws every wait of the session in one
// step; the next waiters are granted; the leases end released, not lost.
func TestSessionClose(t *testing.T) {
	ctx := ctxT(t)
	owner, next, other := newClient(t, "sess-close"), newClient(t, "sess-close-next"), newClient(t, "sess-close-other")
	s, err := owner.NewSession(ctx, 10*time.Second)
	require.NoError(t, err)
	a, b, held := uniq("close-a"), uniq("close-b"), uniq("close-held")
	la, err := owner.Acquire(ctx, a, client.WithSession(s))
	require.NoError(t, err)
	lb, err := owner.Acquire(ctx, b, client.WithSession(s), client.WithMode(client.Shared))
	require.NoError(t, err)
	require.ErrorIs(t, la.Extend(ctx, 0), client.ErrSessionBound, "nothing to extend")
	// The session also waits for a lock another holds.
	lh, err := other.Acquire(ctx, held)
	require.NoError(t, err)
	waited := make(chan error, 1)
	queued := make(chan int, 1)
	go func() {
		_, err := owner.Acquire(ctx, held, client.WithSession(s), client.OnQueued(func(p int) { queued <- p }))
		waited <- err
	}()
	<-queued
	grants := waiters(t, ctx, next, []string{a, b})

	require.NoError(t, s.Close(ctx))
	require.ErrorIs(t, context.Cause(s.Context()), client.ErrSessionClosed)
	for _, g := range grants {
		require.NotNil(t, <-g)
	}
	require.ErrorIs(t, <-waited, client.ErrWithdrawn)
	for _, l := range []*client.Lease{la, lb} {
		require.ErrorIs(t, l.Err(), client.ErrReleased)
		require.ErrorIs(t, context.Cause(l.Context()), client.ErrReleased)
		select {
		case <-l.Lost():
			t.Fatal("a closed session's leases are released, not lost")
		default:
		}
	}
	select {
	case <-s.Lost():
		t.Fatal("Close does not lose the session")
	default:
	}
	require.NoError(t, s.Close(ctx), "Close after Close")
	_, err = owner.Acquire(ctx, uniq("close-after"), client.WithSession(s))
	require.ErrorIs(t, err, client.ErrSessionClosed)
	require.NoError(t, lh.Release(ctx))
}

// A session ended by someone else (here its owner_id closing it from
// another client) is lost, and so is each of its leases.
func TestSessionLost(t *testing.T) {
	ctx := ctxT(t)
	owner, other := newClient(t, "sess-lost"), newClient(t, "sess-lost-other")
	s, err := owner.NewSession(ctx, 10*time.Second, client.WithSessionOwner("shared-owner"))
	require.NoError(t, err)
	l, err := owner.Acquire(ctx, uniq("lost-a"), client.WithSession(s))
	require.NoError(t, err)

	ev, err := other.Do(ctx, topics.Command{Operation: topics.OpSessionClose, SessionID: s.ID, OwnerID: "shared-owner"})
	require.NoError(t, err)
	require.Equal(t, topics.TypeSessionClosed, ev.Type)
	require.Equal(t, 1, ev.SessionInfo.Leases)
	<-s.Lost()
	require.ErrorIs(t, s.Err(), client.ErrSessionLost)
	<-l.Lost()
	require.ErrorIs(t, l.Err(), client.ErrLeaseLost)
	// Its lock.released (session_closed) comes before session.closed.
	require.ErrorIs(t, l.Err(), client.ErrSessionLost)
	require.ErrorIs(t, s.Close(ctx), client.ErrSessionLost, "Close of a lost session returns its loss")
}

// An acquire in a session given up before any reply (the owner is the
// session's, not the call's own) is withdrawn: the worker does not grant
// the lock to the session, which would hold it with no Lease to release it.
func TestSessionAcquireGivenUpBeforeReplyIsWithdrawn(t *testing.T) {
	givenUpBeforeReply(t, "sess-given-up", func(c *client.Client, lock string) func(context.Context) error {
		s, err := c.NewSession(ctxT(t), 30*time.Second)
		require.NoError(t, err)
		return func(ctx context.Context) error {
			_, err := c.Acquire(ctx, lock, client.WithSession(s))
			return err
		}
	})
}

// A renewal in a session given up is not withdrawn: the release would end
// the session's lease.
func TestSessionRenewalGivenUpKeepsTheLease(t *testing.T) {
	ctx := ctxT(t)
	c := newClient(t, "sess-renewal")
	s, err := c.NewSession(ctx, 10*time.Second)
	require.NoError(t, err)
	lock := uniq("sess-renewal")
	l, err := c.Acquire(ctx, lock, client.WithSession(s))
	require.NoError(t, err)
	givenUpKeeps(t, c, l, client.WithSession(s))
	require.NoError(t, s.Close(ctx))
}

func TestSessionRefusals(t *testing.T) {
	ctx := ctxT(t)
	c, other := newClient(t, "sess-refuse"), newClient(t, "sess-refuse-other")
	id := uniq("sess-id")
	s, err := c.NewSession(ctx, 0, client.WithSessionID(id))
	require.NoError(t, err)
	require.Equal(t, time.Duration(topics.DefaultSessionTTLSeconds)*time.Second, s.TTL)
	_, err = other.NewSession(ctx, time.Second, client.WithSessionID(id))
	require.ErrorIs(t, err, client.ErrSessionExists)
	_, err = c.NewSession(ctx, 500*time.Millisecond)
	var e *client.Error
	require.ErrorAs(t, err, &e)
	require.Equal(t, topics.CodeInvalidRequest, e.Code)
	require.Contains(t, e.Message, "ttl")
	_, err = other.Acquire(ctx, uniq("refuse-a"), client.WithSession(s), client.WithOwner("someone-else"))
	require.ErrorIs(t, err, client.ErrNotOwner)
	ev, err := other.Do(ctx, topics.Command{Operation: topics.OpAcquire, LockName: uniq("refuse-b"), OwnerID: "o", SessionID: "no-such-session"})
	require.ErrorIs(t, err, client.ErrSessionNotFound)
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode)
	require.NoError(t, s.Close(ctx))
	require.ErrorIs(t, s.Err(), client.ErrSessionClosed)
}

// twoAcquires is what acquireTwiceGiveUpOne did: two acquires of lock in
// session s of c; the second was given up.
type twoAcquires struct {
	e                   *e2e.Env
	c                   *client.Client
	s                   *client.Session
	lock                string
	first               *client.Lease
	firstErr, secondErr error
}

// acquireTwiceGiveUpOne sends two acquires of one lock in one session while
// no worker runs, gives up the second once both are on the commands topic,
// then starts a worker and waits for both to end. setup runs first, with a
// worker up (it may have another client take the lock).
func acquireTwiceGiveUpOne(t *testing.T, requester string, setup func(e *e2e.Env, lock string)) twoAcquires {
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: requester + "-w1"})
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: requester, ReplyTimeout: 20 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	lock := uniq(requester)
	setup(e, lock)
	commands := e.Watch(e.Names.Commands)
	w.Stop()
	r := twoAcquires{e: e, c: c, s: s, lock: lock}
	first := make(chan struct{})
	go func() {
		defer close(first)
		r.first, r.firstErr = c.Acquire(ctx, lock, client.WithSession(s))
	}()
	waitAcquires(t, commands, lock, s.Owner, 1)
	gone, cancel := context.WithCancel(ctx)
	second := make(chan struct{})
	go func() {
		defer close(second)
		_, r.secondErr = c.Acquire(gone, lock, client.WithSession(s))
	}()
	waitAcquires(t, commands, lock, s.Owner, 2)
	cancel()
	// A withdrawing release waits for its answer: a worker must be up.
	e.StartWorker(e2e.WorkerOpts{Name: requester + "-w2"})
	<-second
	<-first
	return r
}

// Two acquires of a free lock in one session; the second is given up before
// any reply. The worker grants the first and takes the second for its
// renewal: the second's withdrawal, sent then, would end the lease the first
// is about to get. It waits for the first, which ends with a Lease, so none
// is sent.
func TestSessionAcquireGivenUpBesideAGrantKeepsTheLease(t *testing.T) {
	ctx := ctxT(t)
	r := acquireTwiceGiveUpOne(t, "sess-twice-free", func(*e2e.Env, string) {})
	require.ErrorIs(t, r.secondErr, context.Canceled)
	require.NoError(t, r.firstErr)
	// Keyed by the lock, the query is applied after any release the
	// given-up acquire sent.
	st, err := r.c.Query(ctx, r.lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusAcquired, st.Status)
	require.Equal(t, r.s.Owner, st.Owner)
	require.Equal(t, r.first.Token, st.Token)
	require.NoError(t, r.first.Err())
	require.NoError(t, r.first.Release(ctx))
}

// Two acquires in one session of a lock another holds; the second is given
// up before any reply. Applied, it takes the first's place in the queue, so
// the first ends withdrawn: the last of the two, it sends the second's
// withdrawal, and the session is never granted the lock.
func TestSessionAcquireGivenUpBesideAWithdrawnOneIsWithdrawn(t *testing.T) {
	ctx := ctxT(t)
	var held *client.Lease
	r := acquireTwiceGiveUpOne(t, "sess-twice-held", func(e *e2e.Env, lock string) {
		other, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "sess-twice-holder"})
		require.NoError(t, err)
		t.Cleanup(func() { other.Close() })
		held, err = other.Acquire(ctx, lock)
		require.NoError(t, err)
	})
	require.ErrorIs(t, r.secondErr, context.Canceled)
	require.ErrorIs(t, r.firstErr, client.ErrWithdrawn)
	require.NoError(t, held.Release(ctx))
	st, err := r.c.Query(ctx, r.lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "granted to %q after its callers ended", st.Owner)
	var grants int
	require.NoError(t, r.e.Store.Pool.QueryRow(ctx,
		`SELECT count(*) FROM lock_events WHERE lock_name = $1 AND owner_id = $2`, r.lock, r.s.Owner).Scan(&grants))
	require.Zero(t, grants, "the session was never granted the lock")
}

// An OnQueued callback that panics (its caller recovers, as an HTTP server
// does) does not leave its acquire counted in flight: a later acquire of
// the same session and lock, given up, is still withdrawn, so the session
// is not granted the lock when the holder releases it.
func TestSessionAcquireAfterAPanickedOneIsWithdrawn(t *testing.T) {
	ctx := ctxT(t)
	holder, c := newClient(t, "sess-panic-holder"), newClient(t, "sess-panic")
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	lock := uniq("sess-panic")
	held, err := holder.Acquire(ctx, lock)
	require.NoError(t, err)
	func() {
		defer func() { require.NotNil(t, recover()) }()
		_, _ = c.Acquire(ctx, lock, client.WithSession(s), client.OnQueued(func(int) { panic("the caller's callback") }))
	}()
	gone, cancel := context.WithCancel(ctx)
	queued := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		_, err := c.Acquire(gone, lock, client.WithSession(s), client.OnQueued(func(p int) { queued <- p }))
		done <- err
	}()
	<-queued
	cancel()
	require.ErrorIs(t, <-done, context.Canceled) // its withdrawal was answered before it returned
	require.NoError(t, held.Release(ctx))
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "granted to %q after its callers ended", st.Owner)
	require.NoError(t, s.Close(ctx))
}

// A lease whose Release is on its way no longer counts as held: an acquire
// of the same session and lock applied after that release, and given up,
// is withdrawn, not left to be granted to the session for nobody.
func TestSessionAcquireGivenUpBesideAReleaseIsWithdrawn(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	w := e.StartWorker(e2e.WorkerOpts{Name: "sess-releasing-w1"})
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "sess-releasing", ReplyTimeout: 20 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	s, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	lock := uniq("sess-releasing")
	l, err := c.Acquire(ctx, lock, client.WithSession(s))
	require.NoError(t, err)
	commands := e.Watch(e.Names.Commands)
	w.Stop() // the release and the acquire wait in Kafka, in order
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	commands.WaitFor(t, 20*time.Second, "the release", func(rs []e2e.Received) bool {
		for _, r := range rs {
			if r.Event.Operation == "release" {
				return true
			}
		}
		return false
	})
	gone, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := c.Acquire(gone, lock, client.WithSession(s))
		done <- err
	}()
	waitAcquires(t, commands, lock, s.Owner, 2) // the first one's, and this one
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	e.StartWorker(e2e.WorkerOpts{Name: "sess-releasing-w2"})
	require.NoError(t, <-released)
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "granted to %q (token %d, released %d) after its caller gave up", st.Owner, st.Token, l.Token)
}

// A Close that gave up before its command was applied (here: the command
// lost in transit) is sent again, with its request_id, by the next Close,
// which returns only once the worker has closed the session: its locks are
// free then, not held until the session's TTL runs out.
func TestSessionCloseAfterACloseThatGaveUp(t *testing.T) {
	ctx := ctxT(t)
	e := e2e.New(t)
	e.StartWorker(e2e.WorkerOpts{Name: "sess-close-again"})
	c, err := client.New(ctx, client.Config{Brokers: e.Brokers, Requester: "sess-close-again"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	s, err := c.NewSession(ctx, time.Minute)
	require.NoError(t, err)
	lock := uniq("sess-close-again")
	_, err = c.Acquire(ctx, lock, client.WithSession(s))
	require.NoError(t, err)

	gone, cancel := context.WithCancel(ctx)
	defer cancel()
	dropped := dropNextProduceThen(t, e, e.Names.Commands, cancel)
	require.ErrorIs(t, s.Close(gone), context.Canceled)
	require.EqualValues(t, 1, dropped.Load(), "the close was lost")

	require.NoError(t, s.Close(ctx))
	st, err := c.Query(ctx, lock)
	require.NoError(t, err)
	require.Equal(t, client.StatusReleased, st.Status, "the session's lock, after Close returned")
	require.NoError(t, s.Close(ctx), "Close after Close")
}

// sentCommand waits for the first command on the commands topic that match
// holds for, and returns it.
func sentCommand(t *testing.T, commands *e2e.Watcher, what string, match func(topics.Command) bool) topics.Command {
	t.Helper()
	var found topics.Command
	commands.WaitFor(t, 20*time.Second, what, func(rs []e2e.Received) bool {
		for _, r := range rs {
			var cmd topics.Command
			if json.Unmarshal(r.Record.Value, &cmd) == nil && match(cmd) {
				found = cmd
				return true
			}
		}
		return false
	})
	return found
}

// A process that resumes its session after a restart (WithSessionID and
// WithSessionOwner) opens another life of it. Every command of a life
// names that life's generation (session.opened's), so an acquire of the
// first life applied only after the reopen (its lock's partition lagged:
// here the SDK's own command sent again, as it was, under a new
// request_id) is refused SESSION_NOT_FOUND rather than granted in the new
// life, which never asked for it and would keep it held.
func TestSessionCommandsNameTheirLife(t *testing.T) {
	ctx := ctxT(t)
	id, owner, lock := uniq("sess-life"), uniq("sess-life-owner"), uniq("sess-life-lock")
	w := env.For(t)
	commands := w.Watch(env.Names.Commands)
	first, second := newClient(t, "sess-life-1"), newClient(t, "sess-life-2")
	replies := w.Watch(first.ReplyTopic(), second.ReplyTopic())
	opened := func(c *client.Client) int64 {
		t.Helper()
		ev := replies.WaitEvent(t, "session.opened of "+id, func(r e2e.Received) bool {
			return r.Record.Topic == c.ReplyTopic() && r.Event.Type == topics.TypeSessionOpened && r.Event.SessionInfo.SessionID == id
		}).Event
		require.Positive(t, ev.SessionInfo.Generation)
		return ev.SessionInfo.Generation
	}
	named := func(cmd topics.Command, g int64) {
		t.Helper()
		require.NotNil(t, cmd.SessionGeneration, "%s without session_generation", cmd.Operation)
		require.Equal(t, g, *cmd.SessionGeneration, cmd.Operation)
	}

	s1, err := first.NewSession(ctx, time.Second, client.WithSessionID(id), client.WithSessionOwner(owner))
	require.NoError(t, err)
	g1 := opened(first)
	_, err = first.Acquire(ctx, lock, client.WithSession(s1))
	require.NoError(t, err)
	late := sentCommand(t, commands, "the first life's acquire", func(c topics.Command) bool {
		return c.Operation == topics.OpAcquire && c.LockName == lock
	})
	named(late, g1)
	require.NoError(t, first.Close()) // the process dies: no keep-alive, no close
	replies.WaitEvent(t, "session.expired of "+id, func(r e2e.Received) bool {
		return r.Event.Type == topics.TypeSessionExpired && r.Event.SessionInfo.SessionID == id
	})

	s2, err := second.NewSession(ctx, 3*time.Second, client.WithSessionID(id), client.WithSessionOwner(owner))
	require.NoError(t, err)
	g2 := opened(second)
	require.NotEqual(t, g1, g2)
	late.RequestID = ""
	ev, err := second.Do(ctx, late)
	require.ErrorIs(t, err, client.ErrSessionNotFound, "applied late, the first life's acquire: %s", ev.Type)
	st, err := second.Query(ctx, lock)
	require.NoError(t, err)
	require.NotEqual(t, client.StatusAcquired, st.Status, "held by %q in session %q", st.Owner, st.Info.SessionID)

	l, err := second.Acquire(ctx, lock, client.WithSession(s2))
	require.NoError(t, err)
	require.Equal(t, id, l.Info().SessionID)
	named(sentCommand(t, commands, "the second life's acquire", func(c topics.Command) bool {
		return c.Operation == topics.OpAcquire && c.LockName == lock && c.ReplyTo == second.ReplyTopic() && c.RequestID != ev.RequestID
	}), g2)
	named(sentCommand(t, commands, "the second life's keep-alive", func(c topics.Command) bool {
		return c.Operation == topics.OpSessionKeepAlive && c.SessionID == id && c.ReplyTo == second.ReplyTopic()
	}), g2)
	require.NoError(t, s2.Close(ctx))
	named(sentCommand(t, commands, "the second life's close", func(c topics.Command) bool {
		return c.Operation == topics.OpSessionClose && c.SessionID == id && c.ReplyTo == second.ReplyTopic()
	}), g2)
}
