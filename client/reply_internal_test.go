package client

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// fakeWorker starts a broker and, in lockworker's place, answers each
// command on the commands topic with the events answer makes of it (none
// for nil), so that tests can feed the client replies no worker sends. An
// event without a request_id gets the command's. answer runs on the
// stand-in's one goroutine, in the commands' order; ctx ends when the test
// does, so that an answer that waits (a full channel of a test that failed)
// can select on it and let the stand-in stop. It returns a client of that
// broker. What breaks the stand-in itself (a command it cannot read, a reply
// it cannot send) fails the test, rather than showing as ErrNoReply after a
// timeout.
func fakeWorker(t *testing.T, answer func(ctx context.Context, cmd topics.Command) []topics.Event) *Client {
	t.Helper()
	c, _ := fakeWorkerWith(t, fakeOpts{}, answer)
	return c
}

// fakeOpts tunes fakeWorkerWith.
type fakeOpts struct {
	// send, when set, sends each reply (to the broker's addresses)
	// instead of the stand-in's own client, and says why it failed.
	send func(ctx context.Context, brokers []string, rec *kgo.Record) error
	// config, when set, changes the client's Config.
	config func(*Config)
}

// patient is fakeOpts for a test that compares the commands the stand-in
// saw one by one: fakeWorker's 1 s reply wait sent a command again on a
// cold broker under -race.
var patient = fakeOpts{config: func(c *Config) { c.ReplyTimeout = 5 * time.Second }}

// fakeWorkerWith is fakeWorker as o says, for a test or a fuzz target; it
// returns the broker too.
func fakeWorkerWith(t testing.TB, o fakeOpts, answer func(ctx context.Context, cmd topics.Command) []topics.Event) (*Client, *kfake.Cluster) {
	t.Helper()
	clearCredentialsEnv(t) // the client New makes here carries none
	names := topics.DefaultNames()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, names.Commands))
	require.NoError(t, err)
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(names.Commands), kgo.ProducerLinger(0))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil {
				return
			}
			fs.EachError(func(topic string, p int32, err error) {
				t.Errorf("fake worker: fetching %s[%d]: %v", topic, p, err)
			})
			fs.EachRecord(func(r *kgo.Record) {
				cmd, err := topics.Decode(r.Value, names.ReplyPrefix)
				if err != nil {
					t.Errorf("fake worker: decoding a command: %v", err)
					return
				}
				for _, ev := range answer(ctx, cmd) {
					if ev.RequestID == "" {
						ev.RequestID = cmd.RequestID
					}
					v, err := ev.Encode()
					if err != nil {
						t.Errorf("fake worker: encoding %s: %v", ev.Type, err)
						return
					}
					rec := &kgo.Record{Topic: cmd.ReplyTo, Key: []byte(cmd.Key()), Value: v}
					if o.send != nil {
						if err := o.send(ctx, cluster.ListenAddrs(), rec); err != nil && ctx.Err() == nil {
							t.Errorf("fake worker: sending %s: %v", ev.Type, err)
						}
						continue
					}
					cl.Produce(ctx, rec, func(_ *kgo.Record, err error) {
						if err != nil && ctx.Err() == nil { // not the test's end
							t.Errorf("fake worker: sending %s: %v", ev.Type, err)
						}
					})
				}
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-done; cl.Close() })
	cfg := Config{Brokers: cluster.ListenAddrs(), Requester: "fake", ReplyTimeout: time.Second, RequestTimeout: 10 * time.Second}
	if o.config != nil {
		o.config(&cfg)
	}
	c, err := New(ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c, cluster
}

// one is ev, fakeWorker's answer of one event.
func one(ev topics.Event) []topics.Event { return []topics.Event{ev} }

// deliver sends v on ch, for a test to read, unless ctx ends first (the test
// failed without reading).
func deliver[T any](ctx context.Context, ch chan<- T, v T) {
	select {
	case ch <- v:
	case <-ctx.Done():
	}
}

// granted is an event of type typ (lock.acquired, lock.extended) answering
// cmd with a lease of lease seconds from now.
func granted(cmd topics.Command, typ string, lease float64) topics.Event {
	now := time.Now()
	ev := topics.NewEvent(typ, cmd.Operation, cmd.RequestID, now)
	ev.LockInfo = &topics.LockInfo{Namespace: cmd.Namespace, LockName: cmd.LockName, OwnerID: cmd.OwnerID, FencingToken: 1,
		Status: topics.StatusAcquired, AcquiredAt: topics.NewTimePtr(now), ExpiresAt: topics.NewTimePtr(now.Add(seconds(lease))),
		LeaseDuration: lease}
	return ev
}

// sessionEvent is an event of type typ (session.opened, session.kept_alive)
// answering cmd: the session lives ttl seconds from now.
func sessionEvent(cmd topics.Command, typ string, ttl float64) topics.Event {
	now := time.Now()
	ev := topics.NewEvent(typ, cmd.Operation, cmd.RequestID, now)
	ev.SessionInfo = &topics.SessionInfo{SessionID: cmd.SessionID, OwnerID: cmd.OwnerID, TTL: ttl,
		ExpiresAt: topics.NewTime(now.Add(seconds(ttl)))}
	return ev
}

// answers is a stand-in worker's answer by operation, for fakeWorker
// through by: a test changes or adds the operations its point is about and
// leaves the rest as they come. An operation it lacks gets no answer.
type answers map[string]func(ctx context.Context, cmd topics.Command) []topics.Event

// by answers each command as a says, recording it in seen first (unless
// seen is nil).
func (a answers) by(seen *recorder) func(context.Context, topics.Command) []topics.Event {
	return func(ctx context.Context, cmd topics.Command) []topics.Event {
		if seen != nil {
			seen.add(cmd)
		}
		if answer := a[cmd.Operation]; answer != nil {
			return answer(ctx, cmd)
		}
		return nil
	}
}

// answerWith answers each command with the one event ev makes of it.
func answerWith(ev func(cmd topics.Command) topics.Event) func(context.Context, topics.Command) []topics.Event {
	return func(_ context.Context, cmd topics.Command) []topics.Event { return one(ev(cmd)) }
}

// grants answers each command with granted's event of typ and lease.
func grants(typ string, lease float64) func(context.Context, topics.Command) []topics.Event {
	return answerWith(func(cmd topics.Command) topics.Event { return granted(cmd, typ, lease) })
}

// sessionAnswers answers each command with sessionEvent's event of typ and ttl.
func sessionAnswers(typ string, ttl float64) func(context.Context, topics.Command) []topics.Event {
	return answerWith(func(cmd topics.Command) topics.Event { return sessionEvent(cmd, typ, ttl) })
}

// leaseAnswers grants each acquire for acquire seconds and each extension
// for extend (0: outside the contract), releases, and answers a query (the
// tests' marker query) with lock.status.
func leaseAnswers(acquire, extend float64) answers {
	return answers{
		topics.OpAcquire: grants(topics.TypeAcquired, acquire),
		topics.OpExtend:  grants(topics.TypeExtended, extend),
		topics.OpRelease: answerWith(releasedEvent),
		topics.OpQuery:   answerWith(statusEvent),
	}
}

// delivering answers as answer does, having delivered each command on ch
// first, for the test to read.
func delivering(ch chan<- topics.Command, answer func(context.Context, topics.Command) []topics.Event) func(context.Context, topics.Command) []topics.Event {
	return func(ctx context.Context, cmd topics.Command) []topics.Event {
		deliver(ctx, ch, cmd)
		return answer(ctx, cmd)
	}
}

// await is the next value on ch (or, as of a Lease's or a Session's Lost,
// ch closed), and fails the test, saying why, if ctx ends first.
func await[T any](t *testing.T, ctx context.Context, ch <-chan T, why string, args ...any) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf(why, args...)
		var zero T
		return zero
	}
}

// A reply whose session ttl or lease_duration is outside the contract's
// range (0 here, which once panicked the session's keep-alive ticker and
// made a lease's keep-alive spin), or max_hold (past a time.Duration, which
// would read as a cap passed already), or that lacks its session_info or
// lock_info, is refused, and what the worker granted by it is given back,
// not left held for nobody until it runs out. NewSession fails, and closes
// the session, so that its ID can be opened again. Acquire fails, and
// releases the grant by its owner and fencing token (by its owner alone when
// the reply names no token). An extension so answered, by Extend or the
// keep-alive, loses the lease with the reply as the cause, not later as if
// no extension had been answered, and releases it.
func TestReplyOutsideTheContractsRange(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	acquired := map[string]string{} // lock -> owner of its acquire
	released := make(chan topics.Command, 4)
	closed := make(chan topics.Command, 1)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpSessionOpen:
			return one(sessionEvent(cmd, topics.TypeSessionOpened, 0))
		case topics.OpSessionClose:
			deliver(ctx, closed, cmd)
			return one(sessionEvent(cmd, topics.TypeSessionClosed, 10))
		case topics.OpAcquire:
			mu.Lock()
			acquired[cmd.LockName] = cmd.OwnerID
			mu.Unlock()
			switch cmd.LockName {
			case "zero":
				ev := granted(cmd, topics.TypeAcquired, 0)
				ev.LockInfo.FencingToken = 7
				return one(ev)
			case "bare":
				ev := granted(cmd, topics.TypeAcquired, 60)
				ev.LockInfo = nil
				return one(ev)
			case "forever":
				ev := granted(cmd, topics.TypeAcquired, 60)
				ev.LockInfo.MaxHold = 1e12 // past a time.Duration
				return one(ev)
			}
			return one(granted(cmd, topics.TypeAcquired, cmp.Or(cmd.LeaseDuration, 60)))
		case topics.OpExtend:
			ev := granted(cmd, topics.TypeExtended, 0)
			if cmd.LockName == "extended-bare" {
				ev.LockInfo = nil
			}
			return one(ev)
		case topics.OpRelease:
			deliver(ctx, released, cmd)
			return one(releasedEvent(cmd))
		}
		return nil
	})
	release := func(lock string) topics.Command {
		t.Helper()
		cmd := await(t, ctx, released, "the refused grant of %q is not released", lock)
		require.Equal(t, lock, cmd.LockName)
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, acquired[lock], cmd.OwnerID, "the grant's owner")
		return cmd
	}

	_, err := c.NewSession(ctx, 10*time.Second, WithSessionID("s1"), WithSessionOwner("o1"))
	require.ErrorContains(t, err, "session.opened with ttl 0 is outside 1..3600 seconds")
	cmd := await(t, ctx, closed, "the refused session is not closed")
	require.Equal(t, "s1", cmd.SessionID)
	require.Equal(t, "o1", cmd.OwnerID)
	_, err = c.Acquire(ctx, "zero")
	require.ErrorContains(t, err, "lock.acquired with lease_duration 0 is outside 0.1..86400 seconds")
	rel := release("zero")
	require.NotNil(t, rel.FencingToken, "guarded by the grant's token, as REQUIRE_FENCING_TOKEN needs")
	require.EqualValues(t, 7, *rel.FencingToken)
	_, err = c.Acquire(ctx, "bare")
	require.ErrorContains(t, err, "lock.acquired without lock_info")
	require.Nil(t, release("bare").FencingToken, "no token to name")
	_, err = c.Acquire(ctx, "forever")
	require.ErrorContains(t, err, "lock.acquired with max_hold 1000000000000 is outside 0.1..604800 seconds")
	release("forever")

	lost := func(l *Lease, cause string) {
		t.Helper()
		await(t, ctx, l.Lost(), "the lease of %q is not lost", l.Name)
		require.ErrorIs(t, l.Err(), ErrLeaseLost)
		require.ErrorContains(t, l.Err(), cause)
		token := release(l.Name).FencingToken
		require.NotNil(t, token, "guarded by the lease's token")
		require.EqualValues(t, 1, *token, "guarded by the lease's token")
	}
	l, err := c.Acquire(ctx, "extended", WithoutKeepAlive())
	require.NoError(t, err)
	err = l.Extend(ctx, time.Minute)
	require.ErrorContains(t, err, "lock.extended with lease_duration 0")
	lost(l, "extension answered outside the contract: lock.extended with lease_duration 0 is outside 0.1..86400 seconds")
	l, err = c.Acquire(ctx, "extended-bare", WithoutKeepAlive())
	require.NoError(t, err)
	require.ErrorContains(t, l.Extend(ctx, 0), "lock.extended without lock_info")
	lost(l, "lock.extended without lock_info")

	// The keep-alive extends at 1.5 s, 3 s before the lease's deadline.
	l, err = c.Acquire(ctx, "kept", WithLease(4500*time.Millisecond))
	require.NoError(t, err)
	lost(l, "extension answered outside the contract: lock.extended with lease_duration 0 is outside 0.1..86400 seconds")
}

// A static token that expires makes every keep-alive fail before it is
// sent, with ErrUnauthenticated: the lease and the session it keeps are lost
// then, with that cause, rather than later at their deadline as if the
// brokers were unreachable. The worker answers every keep-alive, and the
// token expires only once both are set up, by the credentials' clock. The
// lease (6 s) and TTL (3 s) leave each keep-alive seconds to be answered
// (two thirds of them) on a loaded machine: a late answer would lose them by
// their deadline instead.
func TestKeepAliveWithAnExpiredTokenLoses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	exp := time.Now().Add(time.Hour)
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "fake",
		ExpiresAt: jwt.NewNumericDate(exp)}).SignedString([]byte("the fake worker checks no token"))
	require.NoError(t, err)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpAcquire:
			return one(granted(cmd, topics.TypeAcquired, 6))
		case topics.OpExtend:
			return one(granted(cmd, topics.TypeExtended, 6))
		case topics.OpSessionOpen:
			return one(sessionEvent(cmd, topics.TypeSessionOpened, 3))
		case topics.OpSessionKeepAlive:
			return one(sessionEvent(cmd, topics.TypeSessionKeptAlive, 3))
		}
		return nil
	})
	// The token, and the clock it is judged by, are set before any
	// keep-alive runs: they start with Acquire and NewSession.
	c.creds, err = loadCredentials(Config{Token: token})
	require.NoError(t, err)
	var expired atomic.Bool
	c.creds.now = func() time.Time {
		if expired.Load() {
			return exp.Add(time.Second)
		}
		return time.Now()
	}
	l, err := c.Acquire(ctx, "job", WithLease(6*time.Second))
	require.NoError(t, err)
	s, err := c.NewSession(ctx, 3*time.Second)
	require.NoError(t, err)
	expired.Store(true)
	for what, lost := range map[string]<-chan struct{}{"lease": l.Lost(), "session": s.Lost()} {
		await(t, ctx, lost, "the %s is not lost", what)
	}
	require.ErrorIs(t, l.Err(), ErrLeaseLost)
	require.ErrorIs(t, l.Err(), ErrUnauthenticated)
	require.ErrorIs(t, s.Err(), ErrSessionLost)
	require.ErrorIs(t, s.Err(), ErrUnauthenticated)
}

// TestReplyOfALaterVersion: an answer of a v above the contract's (a later
// worker's, whose fields may mean anything else) is not read as this
// version's: the call fails saying so, and an acquire so answered is given
// back, as one whose reply breaks the contract.
func TestReplyOfALaterVersion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	released := make(chan topics.Command, 1)
	a := leaseAnswers(60, 60)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := granted(cmd, topics.TypeAcquired, 60)
		ev.V = topics.Version + 1
		return one(ev)
	}
	a[topics.OpRelease] = delivering(released, a[topics.OpRelease])
	c := fakeWorker(t, a.by(nil))
	_, err := c.Acquire(ctx, "later")
	require.ErrorContains(t, err, "acquire answered lock.acquired of v 2, and this client reads v 1: upgrade it")
	cmd := await(t, ctx, released, "the grant of a later version is not given back")
	require.Equal(t, "later", cmd.LockName)
}

// A grant or an extension whose lock_info shows another lease than the
// command's (another lock or owner, a lock not acquired, no fencing token;
// for an extension, another token) is refused as one out of range is: no
// worker sends one, but a bug or another producer on the reply topic could,
// and a Lease made of it would extend and release that other lease. The
// refused grant is given back by the acquire's own lock and owner, and by
// the reply's fencing token only when the reply shows that owner's lease of
// that lock with a token: another one's would only be refused
// (TOKEN_MISMATCH), leaving the grant held. A refused extension loses the
// lease and releases it by its own token.
func TestReplyOfAnotherLeaseIsRefused(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	acquired := map[string]string{} // lock -> owner of its acquire
	released := make(chan topics.Command, 4)
	c := fakeWorker(t, func(ctx context.Context, cmd topics.Command) []topics.Event {
		switch cmd.Operation {
		case topics.OpAcquire:
			mu.Lock()
			acquired[cmd.LockName] = cmd.OwnerID
			mu.Unlock()
			ev := granted(cmd, topics.TypeAcquired, 60)
			switch li := ev.LockInfo; cmd.LockName {
			case "other-lock":
				li.LockName = "other"
			case "other-namespace":
				li.Namespace = "ns"
			case "other-owner":
				li.OwnerID = "someone"
			case "scoped-owner": // the owner as a worker under authentication scopes it, which this client has none of
				li.OwnerID = topics.ScopedOwner("fake", cmd.OwnerID)
			case "released":
				li.Status, li.FencingToken = topics.StatusReleased, 5
			case "negative":
				li.FencingToken = -7
			}
			return one(ev)
		case topics.OpExtend:
			ev := granted(cmd, topics.TypeExtended, 60)
			switch cmd.LockName {
			case "extended-token":
				ev.LockInfo.FencingToken = 2
			case "extended-owner":
				ev.LockInfo.OwnerID = "someone"
			}
			return one(ev)
		case topics.OpRelease:
			deliver(ctx, released, cmd)
			return one(releasedEvent(cmd))
		}
		return nil
	})
	release := func(lock string) topics.Command {
		t.Helper()
		cmd := await(t, ctx, released, "the refused grant of %q is not released", lock)
		require.Equal(t, lock, cmd.LockName)
		require.Empty(t, cmd.Namespace)
		mu.Lock()
		defer mu.Unlock()
		require.Equal(t, acquired[lock], cmd.OwnerID, "the acquire's owner")
		return cmd
	}
	for lock, refusal := range map[string]string{
		"other-lock":      `lock.acquired of lock "other" for owner %q, not "other-lock" for %[1]q`,
		"other-namespace": `lock.acquired of lock "ns/other-namespace" for owner %q, not "other-namespace" for %[1]q`,
		"other-owner":     `lock.acquired of lock "other-owner" for owner "someone", not "other-owner" for %q`,
		"scoped-owner":    `lock.acquired of lock "scoped-owner" for owner "fake:%s", not "scoped-owner" for %[1]q`,
		"released":        `lock.acquired with status "released"`,
		"negative":        `lock.acquired with fencing_token -7, below 1`,
	} {
		l, err := c.Acquire(ctx, lock)
		require.Nil(t, l, lock)
		mu.Lock()
		owner := acquired[lock]
		mu.Unlock()
		if strings.Contains(refusal, "%") {
			refusal = fmt.Sprintf(refusal, owner)
		}
		require.EqualError(t, err, fmt.Sprintf("acquiring lock %q: %s", lock, refusal))
		token := release(lock).FencingToken
		if lock == "released" {
			require.NotNil(t, token, "the owner's lease of the lock, by its token")
			require.EqualValues(t, 5, *token)
			continue
		}
		require.Nil(t, token, "no token of the owner's lease of the lock to name")
	}

	for lock, refusal := range map[string]string{
		"extended-token": "lock.extended with fencing_token 2, not the lease's 1",
		"extended-owner": `lock.extended of lock "extended-owner" for owner "someone", not "extended-owner" for %q`,
	} {
		l, err := c.Acquire(ctx, lock, WithoutKeepAlive())
		require.NoError(t, err)
		if strings.Contains(refusal, "%") {
			refusal = fmt.Sprintf(refusal, l.Owner)
		}
		require.EqualError(t, l.Extend(ctx, time.Minute), fmt.Sprintf("extending lock %q: %s", lock, refusal))
		require.ErrorIs(t, l.Err(), ErrLeaseLost)
		require.ErrorContains(t, l.Err(), "extension answered outside the contract: "+refusal)
		token := release(lock).FencingToken
		require.NotNil(t, token, "by the lease's token")
		require.EqualValues(t, 1, *token, "by the lease's token")
	}
}

// A query is answered lock.status about the lock asked for. Another reply
// (another type, or a lock_info of another lock or namespace: no worker
// sends one, another producer on the reply topic could) is refused as a
// grant of another lease is, not returned as the asked lock's state.
func TestQueryRefusesAReplyAboutAnotherLock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _ := fakeWorkerWith(t, fakeOpts{config: func(cfg *Config) { cfg.Namespace = "team" }},
		func(ctx context.Context, cmd topics.Command) []topics.Event {
			ev := granted(cmd, topics.TypeStatus, 60)
			switch li := ev.LockInfo; cmd.LockName {
			case "other-lock":
				li.LockName = "other"
			case "other-namespace":
				li.Namespace = "ns"
			case "no-namespace":
				li.Namespace = ""
			case "acquired":
				ev.Type = topics.TypeAcquired
			case "reviewer": // reviewer 11's: a grant of another lock, owner and namespace
				ev.Type, li.Namespace, li.LockName, li.OwnerID, li.FencingToken = topics.TypeAcquired, "ns", "other", "someone", 7
			case "bare":
				ev.LockInfo = nil
			}
			return one(ev)
		})
	for lock, refusal := range map[string]string{
		"other-lock":      `lock.status of lock "team/other", not "team/other-lock"`,
		"other-namespace": `lock.status of lock "ns/other-namespace", not "team/other-namespace"`,
		"no-namespace":    `lock.status of lock "no-namespace", not "team/no-namespace"`,
		"acquired":        `unexpected reply lock.acquired`,
		"reviewer":        `unexpected reply lock.acquired`,
		"bare":            `lock.status without lock_info`,
	} {
		st, err := c.Query(ctx, lock)
		require.EqualError(t, err, fmt.Sprintf("querying lock %q: %s", lock, refusal),
			"Query returned the state of lock %q of namespace %q (status %s, owner %s)", st.Name, st.Namespace, st.Status, st.Owner)
		require.Zero(t, st, lock)
	}
	st, err := c.Query(ctx, "mine")
	require.NoError(t, err)
	require.Equal(t, "team", st.Namespace)
	require.Equal(t, "mine", st.Name)
	require.Equal(t, StatusAcquired, st.Status)
}

// Under authentication the worker scopes owners by the requester
// (topics.ScopedOwner), and its grants show the owner so: that is the
// acquire's owner, and the lease's; one scoped by another requester is not.
func TestGrantOfTheScopedOwner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	released := make(chan topics.Command, 1)
	a := leaseAnswers(60, 60)
	a[topics.OpAcquire] = func(_ context.Context, cmd topics.Command) []topics.Event {
		ev := granted(cmd, topics.TypeAcquired, 60)
		ev.LockInfo.OwnerID = topics.ScopedOwner(cmd.LockName, cmd.OwnerID) // the lock names the requester
		return one(ev)
	}
	a[topics.OpRelease] = delivering(released, a[topics.OpRelease])
	c := fakeWorker(t, a.by(nil))
	token, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{Subject: "fake",
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}).SignedString([]byte("the fake worker checks no token"))
	require.NoError(t, err)
	c.creds, err = loadCredentials(Config{Token: token})
	require.NoError(t, err)

	l, err := c.Acquire(ctx, "fake", WithOwner("o"), WithoutKeepAlive())
	require.NoError(t, err)
	require.Equal(t, "fake:o", l.Owner, "the owner as the worker sees it")
	require.NoError(t, l.Release(ctx))
	<-released
	_, err = c.Acquire(ctx, "other", WithOwner("o"))
	require.EqualError(t, err, `acquiring lock "other": lock.acquired of lock "other" for owner "other:o", not "other" for "o"`)
}
