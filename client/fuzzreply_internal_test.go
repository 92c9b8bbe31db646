package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"slices"
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
// A LOCK_HELD's RetryAfter must be within the contract's range.
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
		{op: 3, first: typ(topics.TypeCleaned), token: -1},
		{op: 4, first: typ(topics.TypeRevoked), token: math.MaxInt64},
		// The reviewer's findings, as they came.
		{first: raw, later: raw, raw: []byte(`{"v":1,"type":"lock.acquired","operation":"acquire","success":true,"lock_info":{"lock_name":"other","owner_id":"someone","status":"acquired","fencing_token":5,"lease_duration":30,"expires_at":"2030-01-01T00:00:00.000000Z","acquired_at":"2020-01-01T00:00:00.000000Z"},"occurred_at":"2020-01-01T00:00:00.000000Z"}`)},
		{first: raw, later: raw, named: true, raw: []byte(`{"v":1,"type":"lock.acquired","operation":"acquire","success":true,"lock_info":{"lock_name":"fz","owner_id":"o","status":"released","fencing_token":-7,"lease_duration":30,"expires_at":"2030-01-01T00:00:00.000000Z","acquired_at":"2020-01-01T00:00:00.000000Z"},"occurred_at":"2020-01-01T00:00:00.000000Z"}`)},
		{first: raw, later: raw, raw: []byte(`{"type":"lock.acquired","lock_info":null}`)},
		{op: 2, first: raw, raw: []byte("\xff\x00")},
	} {
		f.Add(in.op, in.first, in.later, in.lock, in.owner, in.status, in.token, in.delta,
			in.lease, in.maxHold, in.occurred, in.expires, in.retry, in.queued, in.named, in.bare, in.raw)
	}

	var input atomic.Pointer[fuzzReply]
	input.Store(&fuzzReply{})
	var owner atomic.Pointer[string]          // the last acquire's
	var opened atomic.Pointer[topics.Command] // the last session open
	var prod *kgo.Client
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
		switch cmd.Operation {
		case topics.OpAcquire:
			owner.Store(&cmd.OwnerID)
		case topics.OpSessionOpen:
			opened.Store(&cmd)
		}
		return input.Load().answer(cmd)
	})
	var err error
	prod, err = kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ProducerLinger(0))
	require.NoError(f, err)
	f.Cleanup(prod.Close)

	f.Fuzz(func(t *testing.T, op, first, later, lock, ownerSel, status uint8, token int64, delta int8,
		lease, maxHold, occurred, expires, retry float64, queued, named, bare bool, raw []byte) {
		in := &fuzzReply{op, first, later, lock, ownerSel, status, token, delta, lease, maxHold, occurred, expires, retry, queued, named, bare, raw}
		input.Store(in)
		call := func(name string, fn func(ctx context.Context)) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			began := time.Now()
			fn(ctx)
			require.Less(t, time.Since(began), 5*time.Second, "%s returned past its context", name)
		}
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
			require.Equal(t, *owner.Load(), l.Owner, "the lease is of the owner asked for")
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
			if err != nil {
				return
			}
			defer call("Close", func(ctx context.Context) { _ = s.Close(ctx) })
			asked := opened.Load()
			require.Equal(t, asked.SessionID, s.ID, "the session is the one asked for")
			require.Equal(t, asked.OwnerID, s.Owner, "the session is of the owner asked for")
			if named {
				require.Equal(t, "fzs", s.ID, "the session is the one asked for")
				require.Equal(t, "o", s.Owner, "the session is of the owner asked for")
			}
		case topics.OpQuery:
			call("Query", func(ctx context.Context) { _, _ = c.Query(ctx, "fz") })
		case topics.OpCleanup:
			call("Cleanup", func(ctx context.Context) { _, _ = c.Cleanup(ctx, "*", 0) })
		case topics.OpRevoke:
			call("Revoke", func(ctx context.Context) { _, _ = c.Revoke(ctx, "fz", "", "fuzz") })
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
