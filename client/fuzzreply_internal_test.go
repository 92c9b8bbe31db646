package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// fuzzTypes are the reply types FuzzReply answers with; fuzzRaw stands for
// the input's raw bytes.
var fuzzTypes = []string{topics.TypeAcquired, topics.TypeExtended, topics.TypeReleased, topics.TypeQueued, topics.TypeRejected,
	topics.TypeWithdrawn, topics.TypeExpired, topics.TypeRevoked, topics.TypeStatus, topics.TypeCleaned,
	topics.TypeSessionOpened, topics.TypeSessionKeptAlive, topics.TypeSessionClosed, fuzzRaw}

const fuzzRaw = "fuzz.raw"

var fuzzStatuses = []string{topics.StatusAcquired, topics.StatusReleased, topics.StatusExpired, topics.StatusRevoked, topics.StatusFree}

// fuzzOps are the calls FuzzReply makes, by the operation of the command
// each starts with.
var fuzzOps = []string{topics.OpAcquire, topics.OpSessionOpen, topics.OpQuery, topics.OpCleanup, topics.OpRevoke}

// strayTypes are the types of the event answering no command that
// FuzzReply puts on the reply topic ("": none), the ends of a lease or
// session that the worker sends with no request_id.
var strayTypes = []string{"", topics.TypeExpired, topics.TypeRevoked, topics.TypeReleased, topics.TypeSessionExpired, topics.TypeSessionClosed}

// strayAt is the occurred_at of every stray event, which no fuzzed reply
// has (fuzzSeconds keeps theirs within 285 years of now): a lease or
// session ended by a stray says so by its time (Lease.endedBy,
// routeSession).
var strayAt = time.Date(1500, 1, 2, 3, 4, 5, 678901000, time.UTC)

// fuzzBarrier is the lock of the query FuzzReply sends after a stray, which
// the fake worker answers after it on the same partition: once the query
// returns, the client's reader has routed the stray.
const fuzzBarrier = "fz-barrier"

// fuzzReply is one input of FuzzReply: the call it makes and the replies
// it answers with, made of the fields below and of the command answered.
type fuzzReply struct {
	op uint8
	// first is the type of the reply to the call's command (after a
	// lock.queued, if queued), later that of the reply to any other
	// (extend, release, give-back, session close, withdrawal).
	first, later uint8
	// lock names another lock (bit 0), namespace (bit 1), session (bit 2)
	// than the command's; owner is the command's, it scoped by requester
	// "fake", or another one's.
	lock, owner uint8
	// status is lock_info's status, and a lock.rejected's error code.
	status uint8
	// token is lock_info's fencing_token; for a command that names one,
	// that one plus delta. delta is also queue_position and the session's
	// generation.
	token int64
	delta int8
	// lease is lock_info's lease_duration and session_info's ttl; maxHold,
	// max_hold; occurred is occurred_at, in seconds from now; expires is
	// expires_at, in seconds from occurred_at; retry is
	// retry_after_seconds.
	lease, maxHold, occurred, expires, retry float64

	queued bool   // the call's command is answered lock.queued first
	named  bool   // the acquire is WithOwner("o"), the session WithSessionID("fzs") WithSessionOwner("o"); else generated
	bare   bool   // no lock_info nor session_info
	raw    []byte // the reply of type fuzzRaw, request_id added to an object

	// stray is the type (strayTypes) of an event answering no command,
	// sent before the answer to the call's command (unless strayOff's bit
	// 6) and again, with a barrier, once the lease or session the call
	// returned is held. It is about the call's lock, owner, session and
	// lease (its fencing token token, its generation delta) but for what
	// strayOff names: another lock (bit 0), namespace (1), owner (2),
	// session (3); a request_id of no command (4, else none); no lock_info
	// nor session_info (5). strayDelta is added to its fencing token and
	// generation.
	stray, strayOff uint8
	strayDelta      int8
}

// answer is the fake worker's answer to cmd: its reply, followed by a
// well-formed lock.rejected, so that a call left waiting by the reply
// (lock.queued, a reply it cannot read) ends at once.
func (in *fuzzReply) answer(cmd topics.Command) []topics.Event {
	var evs []topics.Event
	typ := in.later
	if cmd.Operation == fuzzOps[int(in.op)%len(fuzzOps)] {
		typ = in.first
		if in.queued {
			evs = append(evs, queuedEvent(cmd))
		}
	}
	end := topics.NewEvent(topics.TypeRejected, cmd.Operation, cmd.RequestID, time.Now())
	end.ErrorCode, end.ErrorMessage = topics.CodeNotHeld, "fuzz: the end"
	return append(evs, in.event(cmd, fuzzTypes[int(typ)%len(fuzzTypes)]), end)
}

// event is the reply of type typ to cmd.
func (in *fuzzReply) event(cmd topics.Command, typ string) topics.Event {
	at := time.Now().Add(fuzzSeconds(in.occurred))
	ev := topics.NewEvent(typ, cmd.Operation, cmd.RequestID, at)
	if typ == fuzzRaw {
		return ev // replaced by in.raw as it is sent
	}
	ns, name, session := cmd.Namespace, cmd.LockName, cmd.SessionID
	if in.lock&1 != 0 {
		name = "other"
	}
	if in.lock&2 != 0 {
		ns = "ns"
	}
	if in.lock&4 != 0 {
		session = "other"
	}
	owner := []string{cmd.OwnerID, topics.ScopedOwner("fake", cmd.OwnerID), "someone"}[in.owner%3]
	token := in.token
	if cmd.FencingToken != nil {
		token = *cmd.FencingToken + int64(in.delta)
	}
	lease, expires := finite(in.lease), at.Add(fuzzSeconds(in.expires))
	if !in.bare {
		ev.LockInfo = &topics.LockInfo{Namespace: ns, LockName: name, OwnerID: owner, Status: fuzzStatuses[int(in.status)%len(fuzzStatuses)],
			FencingToken: token, AcquiredAt: topics.NewTimePtr(at), ExpiresAt: topics.NewTimePtr(expires), LeaseDuration: lease,
			MaxHold: finite(in.maxHold)}
		ev.SessionInfo = &topics.SessionInfo{SessionID: session, OwnerID: owner, TTL: lease, ExpiresAt: topics.NewTime(expires),
			Generation: int64(in.delta)}
	}
	if typ == topics.TypeRejected {
		retry := finite(in.retry)
		ev.ErrorCode, ev.ErrorMessage, ev.RetryAfterSeconds = topics.ErrorCodes[int(in.status)%len(topics.ErrorCodes)], "fuzz", &retry
	}
	count := int(in.token)
	ev.QueuePosition, ev.RevokedCount, ev.CleanedCount = int(in.delta), count, &count
	return ev
}

// strayType is the stray's type, "" for none.
func (in *fuzzReply) strayType() string { return strayTypes[int(in.stray)%len(strayTypes)] }

// strayEvent is the stray about cmd, the call's command (its lock and
// owner, or its session).
func (in *fuzzReply) strayEvent(cmd topics.Command) topics.Event {
	id := ""
	if in.strayOff&16 != 0 {
		id = "fuzz-stray"
	}
	ev := topics.NewEvent(in.strayType(), cmd.Operation, id, strayAt)
	ns, name, owner, session := cmd.Namespace, cmd.LockName, cmd.OwnerID, cmd.SessionID
	if in.strayOff&1 != 0 {
		name = "other"
	}
	if in.strayOff&2 != 0 {
		ns = "ns"
	}
	if in.strayOff&4 != 0 {
		owner = "someone"
	}
	if in.strayOff&8 != 0 {
		session = "other"
	}
	if in.strayOff&32 == 0 {
		ev.LockInfo = &topics.LockInfo{Namespace: ns, LockName: name, OwnerID: owner, Status: topics.StatusExpired,
			FencingToken: in.token + int64(in.strayDelta), AcquiredAt: topics.NewTimePtr(strayAt), ExpiresAt: topics.NewTimePtr(strayAt),
			LeaseDuration: 60}
		ev.SessionInfo = &topics.SessionInfo{SessionID: session, OwnerID: owner, TTL: 60, ExpiresAt: topics.NewTime(strayAt),
			Generation: int64(in.delta) + int64(in.strayDelta)}
	}
	count := int(in.token) + 1 // not the answer's (event)
	ev.RevokedCount, ev.CleanedCount, ev.Reason = count, &count, "fuzz: stray"
	return ev
}

// sendStray puts the stray about cmd on topic with key, as another
// producer of the reply topic would.
func (in *fuzzReply) sendStray(ctx context.Context, prod *kgo.Client, topic, key string, cmd topics.Command) error {
	v, err := in.strayEvent(cmd).Encode()
	if err != nil {
		return fmt.Errorf("encoding the stray %s: %w", in.strayType(), err)
	}
	return prod.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: v}).FirstErr()
}

// endsLease says whether the stray ends the lease the call's acquire is
// granted: it is an end of its lock, owner and fencing token (token, as
// event gives it).
func (in *fuzzReply) endsLease() bool {
	switch in.strayType() {
	case topics.TypeExpired, topics.TypeRevoked, topics.TypeReleased:
		return in.strayOff&(1|2|4|32) == 0 && in.strayDelta == 0
	}
	return false
}

// ofSession says whether the stray is an end of the session opened by
// the call's command (its ID and owner). It ends the session when its
// generation is the session's too, told by the answer (delta, not 0); one
// without either is told by its times, which put it before the session.
func (in *fuzzReply) ofSession() (of, ends bool) {
	switch in.strayType() {
	case topics.TypeSessionExpired, topics.TypeSessionClosed:
		of = in.strayOff&(4|8|32) == 0
	}
	return of, of && in.strayDelta == 0 && in.delta != 0
}

// byStray says whether err tells of an event of the stray's time.
func byStray(err error) bool {
	return err != nil && strings.Contains(err.Error(), strayAt.Format(time.RFC3339Nano))
}

// answered is the reply the fake worker answered cmd, the call's command,
// with: its times are not those sent.
func (in *fuzzReply) answered(t *testing.T, cmd topics.Command) topics.Event {
	typ := fuzzTypes[int(in.first)%len(fuzzTypes)]
	if typ != fuzzRaw {
		return in.event(cmd, typ)
	}
	ev, err := topics.DecodeEvent(withID(in.raw, cmd.RequestID))
	require.NoError(t, err, "the call took a reply it cannot read")
	return ev
}

// finite is v, or 0 for NaN and infinities, which JSON cannot carry.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

// fuzzSeconds is s seconds, within ±9e9 (about 285 years, so that a
// timestamp from now stays within the contract's years 1..9999).
func fuzzSeconds(s float64) time.Duration {
	return time.Duration(max(min(finite(s), 9e9), -9e9) * float64(time.Second))
}

// FuzzReply answers the SDK's calls (Acquire, then Extend and Release of
// the lease it returns; NewSession and Close; Query; Cleanup; Revoke) with
// replies made of fuzzed fields (fuzzReply) and of the command answered,
// or with raw bytes. The SDK must not panic, each call must return within
// its context, a Session NewSession returns must be the one asked for (its
// ID and owner), and a lease Acquire returns must be the one asked for: the
// lock and owner of the acquire, held (status acquired, a fencing token),
// its local deadline within lease_duration of the grant for a lease that
// cannot be a renewal, and an extension it takes must show that lease.
// A LOCK_HELD's RetryAfter must be within the contract's range. Query
// returns only a lock.status about the lock asked for. The reply topic
// also carries an end of a lease or session that answers no command
// (fuzzReply.stray): a lease is ended by one only when it is about its
// lock, owner and fencing token (and then is), a session only when about
// its ID and owner, and each call returns its own answer, not the stray.
func FuzzReply(f *testing.F) {
	const years = 10 * 365 * 86400
	typ := func(t string) uint8 { return uint8(slices.Index(fuzzTypes, t)) }
	acquired, extended, rejected, raw := typ(topics.TypeAcquired), typ(topics.TypeExtended), typ(topics.TypeRejected), typ(fuzzRaw)
	for _, in := range []fuzzReply{
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60},
		{first: acquired, later: typ(topics.TypeReleased), token: 1, lease: 60, expires: 60},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, queued: true},
		{first: rejected, later: rejected, retry: 1e300},
		{first: acquired, later: extended, lock: 1, owner: 2, token: 5, lease: 30, expires: years},
		{first: acquired, later: extended, status: 1, token: -7, lease: 30, expires: 30},
		{first: acquired, later: extended, token: 1, lease: 30, expires: years},
		{first: acquired, later: extended, token: 1, lease: 30, expires: years, queued: true},
		{first: acquired, later: extended, token: 1, lease: 30, expires: 3600, named: true},
		{first: acquired, later: extended, token: 1, delta: 1, lease: 30, expires: 30},
		{first: acquired, later: extended, token: 1, lease: 1e308, expires: 60, bare: true},
		{op: 1, first: typ(topics.TypeSessionOpened), later: typ(topics.TypeSessionClosed), lease: 60, expires: 60},
		{op: 1, first: typ(topics.TypeSessionOpened), lease: 1e-300},
		{op: 1, first: typ(topics.TypeSessionOpened), lock: 4, owner: 2, lease: 60, expires: 60, named: true},
		{op: 1, first: typ(topics.TypeSessionOpened), owner: 1, lease: 60, expires: 60},
		{op: 2, first: typ(topics.TypeStatus), token: 9},
		{op: 2, first: typ(topics.TypeStatus), lock: 1, token: 9},
		{op: 2, first: typ(topics.TypeStatus), lock: 2, token: 9},
		{op: 2, first: acquired, token: 9},
		{op: 3, first: typ(topics.TypeCleaned), token: -1},
		{op: 4, first: typ(topics.TypeRevoked), token: math.MaxInt64},
		// The reviewer's findings, as they came.
		{first: raw, later: raw, raw: []byte(`{"v":1,"type":"lock.acquired","operation":"acquire","success":true,"lock_info":{"lock_name":"other","owner_id":"someone","status":"acquired","fencing_token":5,"lease_duration":30,"expires_at":"2030-01-01T00:00:00.000000Z","acquired_at":"2020-01-01T00:00:00.000000Z"},"occurred_at":"2020-01-01T00:00:00.000000Z"}`)},
		{first: raw, later: raw, named: true, raw: []byte(`{"v":1,"type":"lock.acquired","operation":"acquire","success":true,"lock_info":{"lock_name":"fz","owner_id":"o","status":"released","fencing_token":-7,"lease_duration":30,"expires_at":"2030-01-01T00:00:00.000000Z","acquired_at":"2020-01-01T00:00:00.000000Z"},"occurred_at":"2020-01-01T00:00:00.000000Z"}`)},
		{first: raw, later: raw, raw: []byte(`{"type":"lock.acquired","lock_info":null}`)},
		{op: 2, first: raw, raw: []byte("\xff\x00")},
		// Strays: an end of the lease, and ends of another lock's or
		// namespace's lease of the owner with the same fencing token; an
		// end of the session, and of another.
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 1},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 2, strayOff: 16},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 3, strayOff: 1},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 1, strayOff: 2, named: true},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 2, strayOff: 1 | 64},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 1, strayOff: 64},
		{first: acquired, later: extended, token: 1, lease: 60, expires: 60, stray: 2, strayDelta: 1},
		{op: 1, first: typ(topics.TypeSessionOpened), delta: 3, lease: 60, expires: 60, stray: 4},
		{op: 1, first: typ(topics.TypeSessionOpened), delta: 3, lease: 60, expires: 60, stray: 5, strayOff: 8, named: true},
		{op: 2, first: typ(topics.TypeStatus), token: 9, stray: 1, strayOff: 16},
		{op: 4, first: typ(topics.TypeRevoked), token: 2, stray: 2, strayOff: 16},
	} {
		f.Add(in.op, in.first, in.later, in.lock, in.owner, in.status, in.token, in.delta,
			in.lease, in.maxHold, in.occurred, in.expires, in.retry, in.queued, in.named, in.bare, in.stray, in.strayOff, in.strayDelta, in.raw)
	}

	var input atomic.Pointer[fuzzReply]
	input.Store(&fuzzReply{})
	// asked is the last command of the call's operation: the acquire, the
	// session open, the query.
	var asked atomic.Pointer[topics.Command]
	var prod *kgo.Client
	// Closed after the fake worker stops (cleanups run last first): it
	// may still be sending a trailing answer when the last input returns.
	f.Cleanup(func() {
		if prod != nil {
			prod.Close()
		}
	})
	c, cluster := fakeWorkerWith(f, fakeOpts{
		config: func(cfg *Config) { cfg.ReplyTimeout = 500 * time.Millisecond },
		send: func(ctx context.Context, brokers []string, rec *kgo.Record) error {
			var ev struct {
				Type      string `json:"type"`
				RequestID string `json:"request_id"`
			}
			if err := json.Unmarshal(rec.Value, &ev); err == nil && ev.Type == fuzzRaw {
				rec.Value = withID(input.Load().raw, ev.RequestID)
			}
			return prod.ProduceSync(ctx, rec).FirstErr()
		},
	}, func(ctx context.Context, cmd topics.Command) []topics.Event {
		if cmd.LockName == fuzzBarrier {
			ev := topics.NewEvent(topics.TypeStatus, cmd.Operation, cmd.RequestID, time.Now())
			ev.LockInfo = &topics.LockInfo{LockName: fuzzBarrier, Status: topics.StatusFree}
			return one(ev)
		}
		in := input.Load()
		if cmd.Operation == fuzzOps[int(in.op)%len(fuzzOps)] {
			asked.Store(&cmd)
			if in.strayType() != "" && in.strayOff&64 == 0 {
				if err := in.sendStray(ctx, prod, cmd.ReplyTo, cmd.Key(), cmd); err != nil && ctx.Err() == nil {
					f.Errorf("fake worker: %v", err)
				}
			}
		}
		return in.answer(cmd)
	})
	var err error
	prod, err = kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(0))
	require.NoError(f, err)

	f.Fuzz(func(t *testing.T, op, first, later, lock, ownerSel, status uint8, token int64, delta int8,
		lease, maxHold, occurred, expires, retry float64, queued, named, bare bool, stray, strayOff uint8, strayDelta int8, raw []byte) {
		in := &fuzzReply{op, first, later, lock, ownerSel, status, token, delta, lease, maxHold, occurred, expires, retry, queued, named, bare, raw,
			stray, strayOff, strayDelta}
		input.Store(in)
		// Each input starts from a client that remembers no lease's end: an
		// end read for an earlier input's lease of the same fencing token
		// and owner would end this one's, and an input would not replay
		// alone as it ran.
		c.mu.Lock()
		clear(c.ended)
		c.endedLog = nil
		c.mu.Unlock()
		call := func(name string, fn func(ctx context.Context)) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			began := time.Now()
			fn(ctx)
			require.Less(t, time.Since(began), 5*time.Second, "%s returned past its context", name)
		}
		// strayAgain sends the stray about the call's command once more,
		// and returns once the client has read it.
		strayAgain := func() {
			call("stray", func(ctx context.Context) {
				require.NoError(t, in.sendStray(ctx, prod, c.replyTopic, fuzzBarrier, *asked.Load()))
				_, err := c.Do(ctx, topics.Command{Operation: topics.OpQuery, LockName: fuzzBarrier})
				require.NoError(t, err, "the barrier's answer")
			})
		}
		// rawAnswer says whether the call's command was answered raw bytes,
		// whose fields the checks below do not know.
		rawAnswer := fuzzTypes[int(first)%len(fuzzTypes)] == fuzzRaw
		switch fuzzOps[int(op)%len(fuzzOps)] {
		case topics.OpAcquire:
			opts := []AcquireOption{WithWait(time.Second), WithoutKeepAlive()} // the test reads the deadline
			if named {
				opts = append(opts, WithOwner("o"))
			}
			var l *Lease
			var err error
			call("Acquire", func(ctx context.Context) { l, err = c.Acquire(ctx, "fz", opts...) })
			read := time.Now()
			if err != nil {
				require.False(t, byStray(err) && !in.endsLease(), "Acquire failed for an end of another lease: %v", err)
				if held := (*Error)(nil); errors.As(err, &held) {
					require.GreaterOrEqual(t, held.RetryAfter, time.Duration(0), "RetryAfter of %v", err)
					require.LessOrEqual(t, held.RetryAfter, seconds(maxRetryAfterSeconds), "RetryAfter of %v", err)
				}
				return
			}
			defer call("Release", func(ctx context.Context) { _ = l.Release(ctx) })
			g := l.Granted()
			require.Equal(t, topics.TypeAcquired, g.Type)
			require.NotNil(t, g.LockInfo)
			require.Equal(t, "fz", l.Name, "the lease is of the lock asked for")
			require.Empty(t, l.Namespace, "the lease is of the namespace asked for")
			require.Equal(t, asked.Load().OwnerID, l.Owner, "the lease is of the owner asked for")
			require.Equal(t, asked.Load().RequestID, g.RequestID, "the grant answers the acquire")
			require.Equal(t, topics.StatusAcquired, g.LockInfo.Status, "a grant shows the lock acquired")
			require.Positive(t, l.Token, "a grant's fencing token is positive")
			require.Equal(t, g.LockInfo.FencingToken, l.Token)
			if !named || queued { // no renewal
				l.mu.Lock()
				deadline := l.deadline
				l.mu.Unlock()
				most := read.Add(seconds(g.LockInfo.LeaseDuration))
				require.False(t, deadline.After(most), "the local deadline is %s past lease_duration from the grant's read",
					deadline.Sub(most))
			}
			if in.strayType() != "" {
				strayAgain()
				if in.endsLease() {
					require.Error(t, l.Err(), "an end of the lease, %s, does not end it", in.strayType())
				} else {
					require.False(t, byStray(l.Err()), "the lease was ended by an end of another: %v", l.Err())
				}
			}
			var extendErr error
			call("Extend", func(ctx context.Context) { extendErr = l.Extend(ctx, 30*time.Second) })
			if extendErr == nil {
				info := l.Info()
				require.Equal(t, "fz", info.LockName, "the extension shows the lease")
				require.Empty(t, info.Namespace, "the extension shows the lease")
				require.Equal(t, l.Owner, info.OwnerID, "the extension shows the lease")
				require.Equal(t, l.Token, info.FencingToken, "the extension shows the lease")
				require.Equal(t, topics.StatusAcquired, info.Status, "the extension shows the lease")
			}
		case topics.OpSessionOpen:
			var opts []SessionOption
			if named {
				opts = append(opts, WithSessionID("fzs"), WithSessionOwner("o"))
			}
			var s *Session
			var err error
			call("NewSession", func(ctx context.Context) { s, err = c.NewSession(ctx, time.Minute, opts...) })
			of, ends := in.ofSession()
			if err != nil {
				require.False(t, byStray(err) && !of, "NewSession failed for an end of another session: %v", err)
				return
			}
			defer call("Close", func(ctx context.Context) { _ = s.Close(ctx) })
			open := asked.Load()
			require.Equal(t, open.SessionID, s.ID, "the session is the one asked for")
			require.Equal(t, open.OwnerID, s.Owner, "the session is of the owner asked for")
			require.False(t, s.opened.Equal(strayAt), "NewSession took a stray for its answer")
			if named {
				require.Equal(t, "fzs", s.ID, "the session is the one asked for")
				require.Equal(t, "o", s.Owner, "the session is of the owner asked for")
			}
			if in.strayType() != "" {
				strayAgain()
				if ends {
					require.Error(t, s.Err(), "an end of the session, %s, does not end it", in.strayType())
				} else if !of {
					require.False(t, byStray(s.Err()), "the session was ended by an end of another: %v", s.Err())
				}
			}
		case topics.OpQuery:
			var st LockState
			var err error
			call("Query", func(ctx context.Context) { st, err = c.Query(ctx, "fz") })
			if err != nil {
				return
			}
			ans := in.answered(t, *asked.Load())
			require.Equal(t, topics.TypeStatus, ans.Type, "Query takes only a lock.status")
			require.NotNil(t, ans.LockInfo, "Query takes only a lock.status with its lock_info")
			require.Equal(t, "fz", st.Name, "the state is of the lock asked for")
			require.Empty(t, st.Namespace, "the state is of the namespace asked for")
			require.Equal(t, ans.LockInfo.FencingToken, st.Token, "Query returns its own answer")
		case topics.OpCleanup:
			var r CleanupResult
			var err error
			call("Cleanup", func(ctx context.Context) { r, err = c.Cleanup(ctx, "*", 0) })
			if err == nil && !rawAnswer {
				require.Equal(t, int(token), r.Count, "Cleanup returns its own answer")
			}
		case topics.OpRevoke:
			var n int
			var err error
			call("Revoke", func(ctx context.Context) { n, err = c.Revoke(ctx, "fz", "", "fuzz") })
			if err == nil && !rawAnswer {
				require.Equal(t, int(token), n, "Revoke returns its own answer")
			}
		}
	})
}

// withID is b with "request_id": id appended when b is a JSON object (a
// later member wins in encoding/json), else b as it is.
func withID(b []byte, id string) []byte {
	t := bytes.TrimSpace(b)
	if !json.Valid(t) || len(t) < 2 || t[0] != '{' {
		return b
	}
	inner := bytes.TrimSpace(t[1 : len(t)-1])
	q, _ := json.Marshal(id)
	out := append([]byte("{"), inner...)
	if len(inner) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"request_id":`...)
	out = append(out, q...)
	return append(out, '}')
}
