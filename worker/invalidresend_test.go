package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// commandMetrics records the results the applier reports.
type commandMetrics struct {
	noMetrics
	mu       sync.Mutex
	commands []string // "operation result"
	dead     []string
}

func (m *commandMetrics) Command(op, result string, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commands = append(m.commands, op+" "+result)
}

func (m *commandMetrics) DeadLettered(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dead = append(m.dead, reason)
}

// A copy of an applied request that is no longer a valid command (a resend
// to a replica whose validation is stricter than that of the one that
// applied it, or whose content changed) is answered as any copy is: its
// stored outcome again to the same reply_to, REQUEST_ID_CONFLICT to
// another; not refused INVALID_REQUEST and dead-lettered while the lease it
// got stays held. One whose request_id has no stored outcome is refused as
// before.
func TestInvalidCopyOfAppliedRequestIsAnsweredFromItsOutcome(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	m := &commandMetrics{}
	w.cfg.Metrics = m
	p := w.newPartition(w.hard, 0)
	names := topics.DefaultNames()
	const reply, other = "locks.replies.resend", "locks.replies.other"
	off := int64(0)
	send := func(values ...string) {
		var recs []*kgo.Record
		for _, v := range values {
			recs = append(recs, &kgo.Record{Topic: names.Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: []byte(v)})
			off++
		}
		apply(w, segment{p: p, records: recs, polledAt: time.Now()})
		require.Equal(t, off, storedOffset(t, st, 0))
	}
	answers := func(topic string) []topics.Event {
		var evs []topics.Event
		for _, r := range outboxRows(t, st, topic, 0) {
			ev, err := topics.DecodeEvent(r.value)
			require.NoError(t, err)
			evs = append(evs, ev)
		}
		return evs
	}
	type lease struct {
		owner   string
		token   int64
		expires time.Time
	}
	holder := func(lock string) (l lease) {
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT owner_id, fencing_token, expires_at FROM lock_holders WHERE lock_name = $1`, lock).
			Scan(&l.owner, &l.token, &l.expires))
		return l
	}
	const acquire = `{"request_id":"r1","operation":"acquire","lock_name":"a","owner_id":"o","reply_to":"` + reply + `"}`
	// Decode refuses it: a max_hold the replica that granted the acquire
	// may have taken.
	const invalid = `{"request_id":"r1","operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400,"reply_to":"`

	send(acquire)
	granted := answers(reply)
	require.Len(t, granted, 1)
	require.Equal(t, topics.TypeAcquired, granted[0].Type)
	was := holder("a")

	// The same reply_to: the stored lock.acquired again.
	send(invalid + reply + `"}`)
	got := answers(reply)
	require.Len(t, got, 2)
	require.Equal(t, topics.TypeAcquired, got[1].Type, "%+v", got[1])
	require.Equal(t, granted[0].EventID, got[1].EventID, "the stored outcome, not a new one")
	require.Empty(t, outboxRows(t, st, names.DeadLetter, 0), "a copy of an applied request is not dead-lettered")

	// Another reply_to: REQUEST_ID_CONFLICT, told nothing of the outcome.
	send(invalid + other + `"}`)
	conflict := answers(other)
	require.Len(t, conflict, 1)
	require.Equal(t, topics.TypeRejected, conflict[0].Type)
	require.Equal(t, topics.CodeRequestIDConflict, conflict[0].ErrorCode)
	require.Equal(t, "r1", conflict[0].RequestID)
	require.Nil(t, conflict[0].LockInfo)
	require.Empty(t, outboxRows(t, st, names.DeadLetter, 0))
	require.Equal(t, was, holder("a"), "the lease as granted")
	require.EqualValues(t, 1, acquisitions(t, st, "a"))

	// After the request, in the batch that applies it: the outcome it
	// wrote.
	send(`{"request_id":"r2","operation":"acquire","lock_name":"b","owner_id":"o","reply_to":"`+reply+`"}`,
		`{"request_id":"r2","operation":"acquire","lock_name":"b","owner_id":"o","max_hold":1e-400,"reply_to":"`+reply+`"}`)
	got = answers(reply)
	require.Len(t, got, 4)
	require.Equal(t, topics.TypeAcquired, got[2].Type)
	require.Equal(t, got[2].EventID, got[3].EventID)
	require.Empty(t, outboxRows(t, st, names.DeadLetter, 0))

	// Refused by admission (REQUIRE_FENCING_TOKEN set since): the same.
	const extend = `{"request_id":"x1","operation":"extend","lock_name":"a","owner_id":"o","reply_to":"` + reply + `"}`
	send(extend)
	w.cfg.RequireFencingToken = true
	send(extend)
	got = answers(reply)
	require.Len(t, got, 6)
	require.Equal(t, topics.TypeExtended, got[4].Type)
	require.Equal(t, got[4].EventID, got[5].EventID)
	require.Empty(t, outboxRows(t, st, names.DeadLetter, 0))

	// A request_id without a stored outcome: refused as before.
	send(`{"request_id":"r3","operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400,"reply_to":"` + reply + `"}`)
	got = answers(reply)
	require.Len(t, got, 7)
	require.Equal(t, topics.TypeRejected, got[6].Type)
	require.Equal(t, topics.CodeInvalidRequest, got[6].ErrorCode)
	require.Equal(t, "r3", got[6].RequestID)
	require.Len(t, outboxRows(t, st, names.DeadLetter, 0), 1)

	// Nor one PostgreSQL cannot hold, which is not looked up: the batch
	// commits (send checks its offset).
	send(`{"request_id":"\u0000","operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400,"reply_to":"` + reply + `"}`)
	require.Len(t, answers(reply), 8)
	require.Len(t, outboxRows(t, st, names.DeadLetter, 0), 2)

	require.Equal(t, []string{"acquire ok", "acquire ok", "acquire " + topics.CodeRequestIDConflict, "acquire ok", "acquire ok",
		"extend ok", "extend ok", "acquire " + topics.CodeInvalidRequest, "acquire " + topics.CodeInvalidRequest}, m.commands,
		"the copies counted as the duplicates they are")
	require.Equal(t, []string{topics.CodeInvalidRequest, topics.CodeInvalidRequest}, m.dead)
}

// With authentication, a copy of a stored request that authorize refuses
// (here without a token, or on another requester's reply topic) is
// refused as before, whatever else is wrong with it: its sender is not
// known to be the requester, and is told nothing of the outcome.
func TestUnauthorizedInvalidCopyIsRefused(t *testing.T) {
	w, st, token := authWorker(t)
	p := w.newPartition(w.hard, 0)
	names := topics.DefaultNames()
	alice, mallory := names.ReplyTopic("alice"), names.ReplyTopic("mallory")
	off := int64(0)
	send := func(v string, tok string) {
		r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: []byte(v)}
		if tok != "" {
			r.Headers = []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(tok)}}
		}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
		require.Equal(t, off, storedOffset(t, st, 0))
	}
	send(`{"request_id":"a1","operation":"acquire","lock_name":"a","owner_id":"o","reply_to":"`+alice+`"}`, token("alice"))
	require.Len(t, outboxRows(t, st, alice, 0), 1)
	const invalid = `{"request_id":"a1","operation":"acquire","lock_name":"a","owner_id":"o","max_hold":1e-400,"reply_to":"`

	send(invalid+alice+`"}`, "")
	dlq := outboxRows(t, st, names.DeadLetter, 0)
	require.Len(t, dlq, 1)
	msg, _ := dlq[0].header(topics.HeaderError)
	require.Contains(t, msg, topics.CodeUnauthenticated+": ")
	require.Len(t, outboxRows(t, st, alice, 0), 1, "nothing answered to the reply_to of an unauthenticated record")

	send(invalid+alice+`"}`, token("mallory"))
	dlq = outboxRows(t, st, names.DeadLetter, 0)
	require.Len(t, dlq, 2)
	msg, _ = dlq[1].header(topics.HeaderError)
	require.Contains(t, msg, topics.CodeForbidden+": ")
	require.Len(t, outboxRows(t, st, alice, 0), 1)
	refused := outboxRows(t, st, mallory, 0)
	require.Len(t, refused, 1)
	ev, err := topics.DecodeEvent(refused[0].value)
	require.NoError(t, err)
	require.Equal(t, topics.CodeForbidden, ev.ErrorCode)

	// Alice's own copy is hers: the stored outcome.
	send(invalid+alice+`"}`, token("alice"))
	require.Len(t, outboxRows(t, st, names.DeadLetter, 0), 2)
	got := outboxRows(t, st, alice, 0)
	require.Len(t, got, 2)
	first, err := topics.DecodeEvent(got[0].value)
	require.NoError(t, err)
	again, err := topics.DecodeEvent(got[1].value)
	require.NoError(t, err)
	require.Equal(t, first.EventID, again.EventID)
}
