package client

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// Answers that come late, more than the keep-alive's resend interval (here
// ReplyTimeout, 1 s) but within the room before the session's deadline,
// keep the session: the late answer to the first copy is taken, rather
// than each keep-alive given up for a new one whose answer comes as late.
// The stand-in answers every command 1.5 s after it reads it, each answer
// on its own, so answers do not queue behind one another.
func TestSessionKeepAliveAnsweredLate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ttl, late = 6, 1500 * time.Millisecond // keep-alives every 2 s, resent every 1 s
	var mu sync.Mutex
	var prod *kgo.Client
	c, _ := fakeWorkerWith(t, fakeOpts{send: func(ctx context.Context, brokers []string, rec *kgo.Record) error {
		mu.Lock()
		defer mu.Unlock()
		if prod == nil {
			var err error
			if prod, err = kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ProducerLinger(0)); err != nil {
				return err
			}
			t.Cleanup(prod.Close)
		}
		time.AfterFunc(late, func() { prod.Produce(ctx, rec, nil) }) // the fault: a slow path to the reply
		return nil
	}}, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			return one(sessionEvent(cmd, topics.TypeSessionOpened, ttl))
		case topics.OpSessionKeepAlive:
			return one(sessionEvent(cmd, topics.TypeSessionKeptAlive, ttl))
		}
		return nil
	})
	s, err := c.NewSession(ctx, ttl*time.Second)
	require.NoError(t, err)
	before := s.ExpiresAt()
	for range 2 {
		require.Eventually(t, func() bool { return s.Err() != nil || s.ExpiresAt().After(before) }, ttl*time.Second, 10*time.Millisecond,
			"no keep-alive answered, nor the session lost")
		require.NoError(t, s.Err(), "lost though every keep-alive was answered within its room")
		before = s.ExpiresAt()
	}
}

// A NewSession given up before its answer closes the session the worker
// may have opened, so that it is not kept for nobody until its TTL; one
// whose ID was given WithSessionID does not, as that session may be
// another process's. The worker here never answers an open.
func TestNewSessionGivenUpClosesItsSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmds := make(chan topics.Command, 16)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		deliver(ctx, cmds, cmd)
		if cmd.Operation != topics.OpSessionClose {
			return nil
		}
		ev := topics.NewEvent(topics.TypeSessionClosed, cmd.Operation, cmd.RequestID, time.Now())
		ev.SessionInfo = &topics.SessionInfo{SessionID: cmd.SessionID, OwnerID: cmd.OwnerID}
		return one(ev)
	})
	next := func(op string) topics.Command {
		cmd := await(t, ctx, cmds, "no %s came", op)
		require.Equal(t, op, cmd.Operation)
		return cmd
	}
	// giveUp opens a session given up once the open is on its way.
	giveUp := func(opts ...SessionOption) (opened topics.Command, err error) {
		gctx, stop := context.WithCancel(ctx)
		defer stop()
		sent := make(chan topics.Command, 1)
		go func() { sent <- <-cmds; stop() }()
		_, err = c.NewSession(gctx, time.Minute, opts...)
		return <-sent, err
	}

	opened, err := giveUp()
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, topics.OpSessionOpen, opened.Operation)
	require.Equal(t, opened.SessionID, next(topics.OpSessionClose).SessionID)

	opened, err = giveUp(WithSessionID("shared-session"))
	require.ErrorIs(t, err, context.Canceled)
	require.Equal(t, "shared-session", opened.SessionID)
	// The commands topic has one partition: a close sent would come before
	// the query's command.
	qctx, stop := context.WithTimeout(ctx, 200*time.Millisecond)
	defer stop()
	_, err = c.Query(qctx, "probe")
	require.ErrorIs(t, err, context.DeadlineExceeded, "the fake worker does not answer queries")
	require.Equal(t, "probe", next(topics.OpQuery).LockName, "no close for a session ID given WithSessionID")
}

// replyPublisher publishes events onto c's reply topic, keyed by their
// session, as another producer on it could.
func replyPublisher(t *testing.T, ctx context.Context, cluster *kfake.Cluster, c *Client) func(topics.Event) {
	prod, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(c.ReplyTopic()))
	require.NoError(t, err)
	t.Cleanup(prod.Close)
	return func(ev topics.Event) {
		t.Helper()
		v, err := ev.Encode()
		require.NoError(t, err)
		require.NoError(t, prod.ProduceSync(ctx, &kgo.Record{Key: []byte(topics.SessionKey(ev.SessionInfo.SessionID)), Value: v}).FirstErr())
	}
}

// A copy of an earlier session's end (session.closed, session.expired) of
// the same ID, delivered late (at least once), does not end the session
// opened again with that ID (WithSessionID): its occurred_at is before the
// open's, and a session.expired's expires_at too. The closed one here was
// to end after the new session's first expiry (a longer TTL), so only its
// occurred_at tells; of one expired stamped just after the open, only its
// expires_at. An end of the new session still ends it.
func TestEarlierSessionsEndDoesNotEndTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := make(chan topics.Event, 1)
	c, cluster := fakeWorkerWith(t, fakeOpts{}, answers{
		topics.OpSessionOpen: func(_ context.Context, cmd topics.Command) []topics.Event {
			return one(sessionEvent(cmd, topics.TypeSessionOpened, cmd.TTL))
		},
		topics.OpSessionKeepAlive: sessionAnswers(topics.TypeSessionKeptAlive, 3),
		topics.OpSessionClose: func(ctx context.Context, cmd topics.Command) []topics.Event {
			ev := sessionEvent(cmd, topics.TypeSessionClosed, 10) // when it was to end
			deliver(ctx, closed, ev)
			return one(ev)
		},
		topics.OpQuery: answerWith(statusEvent),
	}.by(nil))
	publish := replyPublisher(t, ctx, cluster, c)
	// read has every event published before it routed: the reply topic
	// has one partition, and a query's answer comes after them.
	read := func() {
		t.Helper()
		_, err := c.Query(ctx, "sync")
		require.NoError(t, err)
	}

	first, err := c.NewSession(ctx, 10*time.Second, WithSessionID("x"), WithSessionOwner("o"))
	require.NoError(t, err)
	require.NoError(t, first.Close(ctx))
	firstClosed := <-closed

	s, err := c.NewSession(ctx, 3*time.Second, WithSessionID("x"), WithSessionOwner("o"))
	require.NoError(t, err)
	// The events' times are the worker's (the database's), taken from its
	// replies, not this host's: only their order counts.
	require.True(t, firstClosed.OccurredAt.Before(s.opened), "the first session ended before the open")
	require.True(t, firstClosed.SessionInfo.ExpiresAt.After(s.ExpiresAt()), "the first session was to end later")
	// As if the first session had expired instead: its expiry passed
	// before its end.
	firstExpired := topics.NewEvent(topics.TypeSessionExpired, topics.OpExpire, "", firstClosed.OccurredAt.Time)
	firstExpired.SessionInfo = &topics.SessionInfo{SessionID: "x", OwnerID: "o", TTL: 10, ExpiresAt: topics.NewTime(firstClosed.OccurredAt.Add(-time.Millisecond))}
	// Its expiry stamped just after the open, by a scheduler that ended it
	// as the open came: its expires_at still tells.
	racing := firstExpired
	racing.OccurredAt = topics.NewTime(s.opened.Add(time.Millisecond))
	publish(firstClosed)
	publish(firstExpired)
	publish(racing)
	read()
	require.NoError(t, s.Err(), "ended by the first session's end")
	select {
	case <-s.Lost():
		t.Fatal("lost to the first session's end")
	default:
	}

	ended := topics.NewEvent(topics.TypeSessionExpired, topics.OpExpire, "", s.ExpiresAt())
	ended.SessionInfo = &topics.SessionInfo{SessionID: "x", OwnerID: "o", TTL: 3, ExpiresAt: topics.NewTime(s.ExpiresAt())}
	publish(ended)
	await(t, ctx, s.Lost(), "the session's own end does not end it")
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.ErrorContains(t, s.Err(), "session.expired")
}

// Where the worker tells generations, an end event counts only for the
// session of its generation: the end of an earlier session of the ID
// stamped after the open of this one, and to end after it (a close
// racing the open, from another process of the owner), which the times
// would count as this one's, does not end it; an end of its own
// generation does. Every command of the session names its generation.
func TestEarlierSessionsEndByItsGeneration(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var opens int64
	var named []topics.Command // the commands that named a generation
	c, cluster := fakeWorkerWith(t, fakeOpts{}, func(ctx context.Context, cmd topics.Command) []topics.Event {
		mu.Lock()
		defer mu.Unlock()
		if cmd.SessionGeneration != nil {
			named = append(named, cmd)
		}
		switch cmd.Operation {
		case topics.OpSessionOpen:
			opens++
			ev := sessionEvent(cmd, topics.TypeSessionOpened, cmd.TTL)
			ev.SessionInfo.Generation = 10 * opens
			return one(ev)
		case topics.OpSessionClose:
			ev := sessionEvent(cmd, topics.TypeSessionClosed, 10)
			ev.SessionInfo.Generation = *cmd.SessionGeneration
			return one(ev)
		case topics.OpQuery:
			return one(statusEvent(cmd))
		}
		return nil
	})
	publish := replyPublisher(t, ctx, cluster, c)
	end := func(s *Session, g int64) {
		t.Helper()
		ev := topics.NewEvent(topics.TypeSessionClosed, topics.OpSessionClose, "", time.Now().Add(time.Second))
		ev.SessionInfo = &topics.SessionInfo{SessionID: s.ID, OwnerID: s.Owner, TTL: 60, ExpiresAt: topics.NewTime(s.ExpiresAt().Add(time.Minute)), Generation: g}
		publish(ev)
		_, err := c.Query(ctx, "sync") // one partition: routed once answered
		require.NoError(t, err)
	}

	first, err := c.NewSession(ctx, time.Minute, WithSessionID("x"), WithSessionOwner("o"))
	require.NoError(t, err)
	require.NoError(t, first.Close(ctx))
	s, err := c.NewSession(ctx, time.Minute, WithSessionID("x"), WithSessionOwner("o"))
	require.NoError(t, err)
	end(s, 10)
	require.NoError(t, s.Err(), "ended by the first session's end")
	end(s, 20)
	await(t, ctx, s.Lost(), "the session's own end does not end it")
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, named, 1, "the first session's close")
	require.EqualValues(t, 10, *named[0].SessionGeneration)
}

// A keep-alive answered outside the contract (no session_info, a ttl out
// of range, another session's ID or generation) loses the session with
// the reply as the cause, at once rather than at its deadline as if
// unanswered, and closes it, best effort, as NewSession does a session
// opened so: the worker may hold it, and would answer every keep-alive
// alike. The keep-alives and the closes name the session's generation.
func TestKeepAliveAnsweredOutsideTheContract(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ttl = 3 // the first keep-alive at 1 s
	closed := make(chan topics.Command, 4)
	var mu sync.Mutex
	kept := map[string]topics.Command{}
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			ev := sessionEvent(cmd, topics.TypeSessionOpened, ttl)
			ev.SessionInfo.Generation = 7
			return one(ev)
		case topics.OpSessionClose:
			deliver(ctx, closed, cmd)
			return one(sessionEvent(cmd, topics.TypeSessionClosed, ttl))
		case topics.OpSessionKeepAlive:
			mu.Lock()
			kept[cmd.SessionID] = cmd
			mu.Unlock()
			ev := sessionEvent(cmd, topics.TypeSessionKeptAlive, ttl)
			ev.SessionInfo.Generation = 7
			switch cmd.SessionID {
			case "bare":
				ev.SessionInfo = nil
			case "ttl0":
				ev.SessionInfo.TTL = 0
			case "other-id":
				ev.SessionInfo.SessionID = "elsewhere"
			case "other-gen":
				ev.SessionInfo.Generation = 8
			}
			return one(ev)
		}
		return nil
	})
	causes := map[string]string{
		"bare":      "keep-alive answered outside the contract: session.kept_alive without session_info",
		"ttl0":      "keep-alive answered outside the contract: session.kept_alive with ttl 0 is outside 1..3600 seconds",
		"other-id":  `keep-alive answered outside the contract: session.kept_alive of session "elsewhere"`,
		"other-gen": "keep-alive answered outside the contract: session.kept_alive of generation 8, not 7",
	}
	sessions := map[string]*Session{}
	for id := range causes {
		s, err := c.NewSession(ctx, ttl*time.Second, WithSessionID(id))
		require.NoError(t, err)
		sessions[id] = s
	}
	for id, s := range sessions {
		select {
		case <-s.Lost():
		case <-time.After(2 * ttl * time.Second):
			t.Fatalf("session %q is not lost", id)
		}
		require.ErrorIs(t, s.Err(), ErrSessionLost, id)
		require.ErrorContains(t, s.Err(), causes[id])
	}
	for range causes {
		cmd := await(t, ctx, closed, "a session lost to its keep-alive's answer is not closed")
		require.Contains(t, causes, cmd.SessionID)
		require.NotNil(t, cmd.SessionGeneration, "close of %q", cmd.SessionID)
		require.EqualValues(t, 7, *cmd.SessionGeneration)
	}
	mu.Lock()
	defer mu.Unlock()
	for id := range causes {
		require.NotNil(t, kept[id].SessionGeneration, "keep-alive of %q", id)
		require.EqualValues(t, 7, *kept[id].SessionGeneration)
	}
}

// A Close or Release called just after the host woke from a suspend past
// the session's (or the lease's) expiry, before its timer or the boot-clock
// watch has run, finds it lost, not closed or released: the worker may
// have granted its locks to others already. Nothing is sent.
func TestCloseAfterASuspendPastTheExpiryLoses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var seen recorder
	c := sessionsOnly(t, &seen)
	c.bootTicks = make(chan time.Time) // the boot-clock watch never looks
	suspend := movableBoot(c)
	now := time.Now()
	inSession := func(s *Session, token int64) *Lease {
		t.Helper()
		info := &topics.LockInfo{LockName: "job", OwnerID: s.Owner, FencingToken: token, Status: topics.StatusAcquired, SessionID: s.ID,
			AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(30 * time.Second)), LeaseDuration: 60}
		l, late := c.newLease(topics.Event{Type: topics.TypeAcquired, LockInfo: info, OccurredAt: topics.Time{Time: now}},
			acquireOptions{session: s}, false, sentAtTime(c, now), now)
		require.NoError(t, late)
		return l
	}
	closing, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	releasing, err := c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	closingLease, releasingLease := inSession(closing, 1), inSession(releasing, 2)
	own := grantAt(c, 3, now, 30*time.Second)
	start := seen.len()

	suspend(time.Minute)
	require.ErrorIs(t, closing.Close(ctx), ErrSessionLost)
	// The stand-in answers no release: an ended ctx has Release not wait
	// for one.
	ended, stop := context.WithCancel(ctx)
	stop()
	require.ErrorIs(t, releasingLease.Release(ended), ErrSessionLost)
	require.ErrorIs(t, own.Release(ended), ErrLeaseLost)
	for _, s := range []*Session{closing, releasing} {
		require.ErrorContains(t, s.Err(), "the "+bootClockName()+" shows its expiry passed")
		require.ErrorIs(t, context.Cause(s.Context()), ErrSessionLost)
		select {
		case <-s.Lost():
		default:
			t.Fatalf("session %s not lost", s.ID)
		}
	}
	for _, l := range []*Lease{closingLease, releasingLease, own} {
		require.ErrorIs(t, context.Cause(l.Context()), ErrLeaseLost, "lease %d", l.Token)
		select {
		case <-l.Lost():
		default:
			t.Fatalf("lease %d not lost", l.Token)
		}
	}
	// The commands topic has one partition: a close or release sent would
	// come before this open.
	_, err = c.NewSession(ctx, 30*time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{topics.OpSessionOpen}, seen.since(start), "a close or release sent for what the worker has ended")
}

// The session.opened that answers NewSession must name the session asked
// for: its ID (generated or WithSessionID's) and its owner, as the worker
// scopes it under authentication (as a grant's is compared). One naming
// another (the reviewer's: "mine" of "o" answered as "other" of "someone",
// whose Session would have acquired every lease as "someone") is refused
// as a reply outside the contract is, and the session asked for closed,
// best effort, as the worker may have opened it: for an ID given
// WithSessionID too, as for one whose ttl is out of range.
func TestOpenAnsweredForAnotherSessionIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	closed := make(chan topics.Command, 4)
	answer := func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			ev := sessionEvent(cmd, topics.TypeSessionOpened, 60)
			switch info := ev.SessionInfo; cmd.OwnerID { // the owner names the fault
			case "reviewer":
				info.SessionID, info.OwnerID = "other", "someone"
			case "other-id":
				info.SessionID = "other"
			case "other-owner":
				info.OwnerID = "someone"
			case "scoped":
				info.OwnerID = topics.ScopedOwner("fake", cmd.OwnerID)
			case "scoped-elsewhere":
				info.OwnerID = topics.ScopedOwner("elsewhere", cmd.OwnerID)
			}
			return one(ev)
		case topics.OpSessionClose:
			deliver(ctx, closed, cmd)
			return one(sessionEvent(cmd, topics.TypeSessionClosed, 60))
		}
		return nil
	}
	closedAs := func(owner string) topics.Command {
		t.Helper()
		cmd := await(t, ctx, closed, "the session of %q is not closed", owner)
		require.Equal(t, owner, cmd.OwnerID, "the close of the session asked for")
		return cmd
	}
	refused := func(c *Client, err error, id, cause string) {
		t.Helper()
		require.EqualError(t, err, fmt.Sprintf("opening session %q: %s", id, cause))
		c.mu.Lock()
		defer c.mu.Unlock()
		require.NotContains(t, c.sessions, id, "the refused session is not kept")
	}

	c := fakeWorker(t, answer)
	s, err := c.NewSession(ctx, time.Minute, WithSessionID("mine"), WithSessionOwner("reviewer"))
	require.Nil(t, s)
	refused(c, err, "mine", `session.opened of session "other", not "mine"`)
	require.Equal(t, "mine", closedAs("reviewer").SessionID)
	_, err = c.NewSession(ctx, time.Minute, WithSessionOwner("other-id"))
	id := closedAs("other-id").SessionID
	refused(c, err, id, fmt.Sprintf(`session.opened of session "other", not %q`, id))
	_, err = c.NewSession(ctx, time.Minute, WithSessionID("s-owner"), WithSessionOwner("other-owner"))
	refused(c, err, "s-owner", `session.opened for owner "someone", not "other-owner"`)
	require.Equal(t, "s-owner", closedAs("other-owner").SessionID)
	// Without authentication, no worker scopes the owner.
	_, err = c.NewSession(ctx, time.Minute, WithSessionID("s-scoped"), WithSessionOwner("scoped"))
	refused(c, err, "s-scoped", `session.opened for owner "fake:scoped", not "scoped"`)
	closedAs("scoped")

	s, err = c.NewSession(ctx, time.Minute, WithSessionID("s-right"), WithSessionOwner("o"))
	require.NoError(t, err)
	require.Equal(t, "s-right", s.ID)
	require.Equal(t, "o", s.Owner)
	require.NoError(t, s.Close(ctx))
	closedAs("o")

	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "fake",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte("the fake worker checks no token"))
	require.NoError(t, err)
	a, _ := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.Token = token }}, answer)
	s, err = a.NewSession(ctx, time.Minute, WithSessionOwner("scoped"))
	require.NoError(t, err, "the owner as the worker scopes it")
	require.Equal(t, "fake:scoped", s.Owner, "the owner as the worker sees it")
	require.NoError(t, s.Close(ctx))
	require.Equal(t, s.ID, closedAs("fake:scoped").SessionID)
	_, err = a.NewSession(ctx, time.Minute, WithSessionID("s-elsewhere"), WithSessionOwner("scoped-elsewhere"))
	refused(a, err, "s-elsewhere", `session.opened for owner "elsewhere:scoped-elsewhere", not "scoped-elsewhere"`)
	closedAs("scoped-elsewhere")
}

// A keep-alive refused with a code that applied nothing (REQUEST_ID_CONFLICT,
// INVALID_REQUEST, UNSUPPORTED_VERSION: design.md, Error codes) leaves the
// session, and every lock in it, held by the worker. The session is lost
// here all the same (the next keep-alive may be refused alike), and closed,
// best effort, as one answered outside the contract: else the worker holds
// its locks for nobody until its TTL (up to an hour), and Session.Close,
// finding it lost, sends nothing. A refusal that says the session is not
// ours (SESSION_NOT_FOUND) sends no close: there is nothing to close.
func TestKeepAliveRefusedWithoutEffectClosesTheSession(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const ttl = 3               // the first keep-alive at 1 s
	codes := map[string]string{ // session ID -> its keep-alive's refusal
		"conflict":  topics.CodeRequestIDConflict,
		"invalid":   topics.CodeInvalidRequest,
		"version":   topics.CodeUnsupportedVersion,
		"not-found": topics.CodeSessionNotFound,
	}
	var mu sync.Mutex
	closes := map[string]int{}
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			return one(sessionEvent(cmd, topics.TypeSessionOpened, ttl))
		case topics.OpSessionKeepAlive:
			return one(rejectedEvent(cmd, codes[cmd.SessionID]))
		case topics.OpSessionClose:
			mu.Lock()
			closes[cmd.SessionID]++
			mu.Unlock()
			return one(sessionEvent(cmd, topics.TypeSessionClosed, ttl))
		}
		return nil
	})
	sessions := map[string]*Session{}
	for id := range codes {
		s, err := c.NewSession(ctx, ttl*time.Second, WithSessionID(id))
		require.NoError(t, err)
		sessions[id] = s
	}
	for id, s := range sessions {
		await(t, ctx, s.Lost(), "session %q is not lost", id)
		require.ErrorIs(t, s.Err(), ErrSessionLost, id)
		require.ErrorContains(t, s.Err(), "keep-alive refused", id)
		require.ErrorIs(t, s.Close(ctx), ErrSessionLost, "Close of %q returns the loss", id)
	}
	// Client.Close waits for the keep-alives, and so for their closes.
	require.NoError(t, c.Close())
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, map[string]int{"conflict": 1, "invalid": 1, "version": 1}, closes)
}

// A session_close refused with a code that applied nothing leaves the
// session open on the worker, its keep-alive stopped by the Close. Close
// sends it once more at once, under a new request_id, as Lease.Release
// does a release; refused again, the session is not taken as closed, and a
// later Close sends anew (a new request_id), rather than return the same
// refusal while the worker holds the session's locks until its TTL. A
// refusal that says the session is not ours (SESSION_NOT_FOUND) is the
// close's answer, as before: a later Close returns it and sends nothing.
func TestCloseRefusedWithoutEffectIsSentAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	refuse := map[string]int{} // session ID -> closes to refuse
	codes := map[string]string{"conflict": topics.CodeRequestIDConflict, "invalid": topics.CodeInvalidRequest, "not-found": topics.CodeSessionNotFound,
		"applied": topics.CodeRequestIDConflict}
	var closes []topics.Command
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			return one(sessionEvent(cmd, topics.TypeSessionOpened, 30))
		case topics.OpSessionKeepAlive:
			return one(sessionEvent(cmd, topics.TypeSessionKeptAlive, 30))
		case topics.OpSessionClose:
			mu.Lock()
			defer mu.Unlock()
			closes = append(closes, cmd)
			if refuse[cmd.SessionID] > 0 {
				refuse[cmd.SessionID]--
				return one(rejectedEvent(cmd, codes[cmd.SessionID]))
			}
			if cmd.SessionID == "applied" {
				// The first copy closed it: its stored outcome could not
				// be read back, and the resend finds no session.
				return one(rejectedEvent(cmd, topics.CodeSessionNotFound))
			}
			return one(sessionEvent(cmd, topics.TypeSessionClosed, 30))
		}
		return nil
	})
	// open opens session id whose first n closes are refused.
	open := func(t *testing.T, id string, n int) *Session {
		mu.Lock()
		refuse[id] = n
		mu.Unlock()
		s, err := c.NewSession(ctx, 30*time.Second, WithSessionID(id))
		require.NoError(t, err)
		return s
	}
	// sent is the closes sent since the before-th.
	sent := func(before int) []topics.Command {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(closes[before:])
	}
	count := func() int { return len(sent(0)) }
	requestIDs := func(cmds []topics.Command) map[string]bool {
		ids := map[string]bool{}
		for _, cmd := range cmds {
			ids[cmd.RequestID] = true
		}
		return ids
	}

	// Closed by the second request; or (applied) REQUEST_ID_CONFLICT says
	// an earlier copy of the close was applied (its outcome unreadable):
	// the resend's SESSION_NOT_FOUND is its doing.
	for name, id := range map[string]string{"then closed": "conflict", "closed by the conflicting copy": "applied"} {
		t.Run(name, func(t *testing.T) {
			s := open(t, id, 1)
			before := count()
			require.NoError(t, s.Close(ctx), "closed by the second request")
			cl := sent(before)
			require.Len(t, cl, 2)
			require.Len(t, requestIDs(cl), 2, "the second under a new request_id")
			require.NoError(t, s.Close(ctx))
			require.Len(t, sent(before), 2, "closed: a later Close sends nothing")
		})
	}
	t.Run("refused again", func(t *testing.T) {
		s := open(t, "invalid", 2)
		before := count()
		err := s.Close(ctx)
		require.ErrorIs(t, err, ErrInvalidRequest)
		require.ErrorContains(t, err, "may be held still")
		require.ErrorIs(t, context.Cause(s.Context()), ErrSessionClosed, "the keep-alive stopped all the same")
		require.Len(t, sent(before), 2)
		require.NoError(t, s.Close(ctx), "a later Close sends anew")
		cl := sent(before)
		require.Len(t, cl, 3)
		require.Len(t, requestIDs(cl), 3, "each under a new request_id")
		require.NoError(t, s.Close(ctx))
		require.Len(t, sent(before), 3, "closed: a later Close sends nothing")
	})
	t.Run("not ours", func(t *testing.T) {
		s := open(t, "not-found", 1)
		before := count()
		require.ErrorIs(t, s.Close(ctx), ErrSessionNotFound)
		require.ErrorIs(t, s.Close(ctx), ErrSessionNotFound, "the answer, returned again")
		require.Len(t, sent(before), 1, "nothing to close: sent once")
	})
}
