package worker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// With RequireFencingToken, an owner id alone can neither end nor keep a
// lease: release and extend without fencing_token are refused and change
// nothing, and so is the owner's renewal by acquire, which would keep the
// lease (and move its reply_to) without the token; with the holder's token
// release and extend apply.
func TestRequireFencingToken(t *testing.T) {
	w, st := newApplier(t)
	w.cfg.RequireFencingToken = true
	p := w.newPartition(w.hard, 0)
	reply := "locks.replies.fenced"
	off := int64(0)
	send := func(c topics.Command) {
		c.LockName, c.RequestID = "a", "r-"+c.Operation+time.Now().String()
		if c.OwnerID == "" {
			c.OwnerID = "alice"
		}
		if c.ReplyTo == "" {
			c.ReplyTo = reply
		}
		r := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: command(t, c)}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	}
	lastOn := func(reply string) topics.Event {
		rows := outboxRows(t, st, reply, 0)
		var ev topics.Event
		require.NoError(t, json.Unmarshal(rows[len(rows)-1].value, &ev))
		return ev
	}
	last := func() topics.Event { return lastOn(reply) }
	lease := func() (expires time.Time, replyTo string) {
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT expires_at, reply_to FROM lock_holders WHERE lock_name = 'a'`).Scan(&expires, &replyTo))
		return expires, replyTo
	}
	send(topics.Command{Operation: topics.OpAcquire})
	tok := last().LockInfo.FencingToken
	for _, op := range []string{topics.OpRelease, topics.OpExtend} {
		send(topics.Command{Operation: op})
		ev := last()
		require.Equal(t, topics.CodeInvalidRequest, ev.ErrorCode, op)
		require.Contains(t, ev.ErrorMessage, "fencing_token is required")
	}
	var status string
	var extensions int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT l.status, h.extension_count FROM locks l JOIN lock_holders h USING (namespace, lock_name) WHERE lock_name = 'a'`).Scan(&status, &extensions))
	require.Equal(t, "acquired", status)
	require.Zero(t, extensions)
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 1,
		"the extend is refused on admission, and dead-lettered; the release by the handler, as it may withdraw a wait")

	expires, replyTo := lease()
	send(topics.Command{Operation: topics.OpAcquire, LeaseDuration: 86400, ReplyTo: "locks.replies.mallory"})
	ev := lastOn("locks.replies.mallory")
	require.Equal(t, topics.CodeInvalidRequest, ev.ErrorCode)
	require.Contains(t, ev.ErrorMessage, "REQUIRE_FENCING_TOKEN")
	e2, r2 := lease()
	require.Equal(t, expires, e2, "the lease is not kept by a renewal")
	require.Equal(t, replyTo, r2)
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 1, "a refused renewal is a valid command: not dead-lettered")

	// A waiter gives up without a token, as the SDK withdraws an acquire.
	bob := "locks.replies.bob"
	send(topics.Command{Operation: topics.OpAcquire, OwnerID: "bob", WaitTimeout: 60, ReplyTo: bob})
	require.Equal(t, topics.TypeQueued, lastOn(bob).Type)
	send(topics.Command{Operation: topics.OpRelease, OwnerID: "bob", ReplyTo: bob})
	require.Equal(t, topics.TypeWithdrawn, lastOn(bob).Type)

	send(topics.Command{Operation: topics.OpExtend, FencingToken: &tok})
	require.Equal(t, topics.TypeExtended, last().Type)

	send(topics.Command{Operation: topics.OpRelease, FencingToken: &tok})
	require.Equal(t, topics.TypeReleased, last().Type)
}

// authWorker is an applier that requires tokens signed with an HMAC secret;
// token signs one for a requester, valid until a fixed date far off: a
// fuzz input's token verifies whenever the input is run again.
func authWorker(t testing.TB) (*Worker, *store.Store, func(sub string, namespaces ...string) string) {
	t.Helper()
	w, st := newApplier(t)
	f := filepath.Join(t.TempDir(), "hmac")
	require.NoError(t, os.WriteFile(f, authWorkerKey, 0o600))
	v, err := auth.NewVerifier(auth.Config{HMACKeyFile: f})
	require.NoError(t, err)
	w.cfg.Auth = v
	return w, st, func(sub string, namespaces ...string) string { return authWorkerToken(t, sub, false, namespaces...) }
}

// authWorkerKey is the HMAC key authWorker's verifier trusts.
var authWorkerKey = []byte(strings.Repeat("s", 32))

// authWorkerToken is an authorization header authWorker's verifier takes:
// sub's, allowed namespaces (absent, all), admin if admin.
func authWorkerToken(t testing.TB, sub string, admin bool, namespaces ...string) string {
	c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC))},
		Namespaces: namespaces, Admin: admin}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(authWorkerKey)
	require.NoError(t, err)
	return "Bearer " + s
}

// With authentication, owner_id is no longer a credential: the abuses of
// a shared lock service each fail, and change nothing.
func TestAuthenticatedRequesters(t *testing.T) {
	w, st, token := authWorker(t)
	p := w.newPartition(w.hard, 0)
	names := topics.DefaultNames()
	off := int64(0)
	sendRaw := func(value []byte, hs ...kgo.RecordHeader) {
		r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: value, Headers: hs}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	}
	send := func(c topics.Command, hs ...kgo.RecordHeader) { sendRaw(command(t, c), hs...) }
	as := func(tok string) kgo.RecordHeader {
		return kgo.RecordHeader{Key: topics.HeaderAuthorization, Value: []byte(tok)}
	}
	replies := func(topic string) []topics.Event { return outboxEvents(t, st, topic) }
	last := func(topic string) topics.Event {
		evs := replies(topic)
		require.NotEmpty(t, evs, topic)
		return evs[len(evs)-1]
	}
	holder := func() (owner, status string) {
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT coalesce(h.owner_id, l.ended_owner_id), l.status FROM locks l LEFT JOIN lock_holders h USING (namespace, lock_name) WHERE lock_name = 'a'`).Scan(&owner, &status))
		return owner, status
	}
	alice, mallory := token("alice"), token("mallory", "public")
	aliceTopic, malloryTopic := names.ReplyTopic("alice"), names.ReplyTopic("mallory")

	send(topics.Command{RequestID: "a1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "worker-1", ReplyTo: aliceTopic}, as(alice))
	got := last(aliceTopic)
	require.Equal(t, topics.TypeAcquired, got.Type)
	require.Equal(t, "alice:worker-1", got.LockInfo.OwnerID, "owners are scoped by requester")

	// No token, a forged one, two of them: refused, only dead-lettered.
	dlqBefore := len(outboxRows(t, st, names.DeadLetter, 0))
	rel := topics.Command{RequestID: "m1", Operation: topics.OpRelease, LockName: "a", OwnerID: "worker-1", ReplyTo: aliceTopic}
	send(rel)
	send(rel, as("Bearer not.a.token"))
	send(rel, as(alice), as(alice))
	dlq := outboxRows(t, st, names.DeadLetter, 0)[dlqBefore:]
	require.Len(t, dlq, 3)
	for _, row := range dlq {
		msg, _ := row.header(topics.HeaderError)
		require.True(t, strings.HasPrefix(msg, topics.CodeUnauthenticated+": "), msg)
		if tok, ok := row.header(topics.HeaderAuthorization); ok {
			require.Equal(t, topics.RedactedToken, tok, "no token is replayable from the dead-letter topic")
		}
	}
	require.Len(t, replies(aliceTopic), 1, "nothing answered to the reply_to of an unauthenticated command")

	// Nor of a record that is not a valid command: a rejection on alice's
	// topic is as good a forgery as any (her SDK matches it by request_id).
	bogus := []byte(`{"v":2,"request_id":"a9","reply_to":"` + aliceTopic + `"}`)
	sendRaw(bogus)
	sendRaw(bogus, as(mallory))
	require.Len(t, replies(aliceTopic), 1, "nothing answered to alice's topic for a record alice did not sign")
	dlq = outboxRows(t, st, names.DeadLetter, 0)[dlqBefore+3:]
	require.Len(t, dlq, 2)
	msg, _ := dlq[0].header(topics.HeaderError)
	require.True(t, strings.HasPrefix(msg, topics.CodeUnauthenticated+": "), msg)
	require.Equal(t, topics.CodeForbidden, last(malloryTopic).ErrorCode, "answered on her own topic")

	// Mallory, with her own token: alice's owner id is not hers to use, nor
	// alice's reply topic, nor a namespace her token does not list.
	send(topics.Command{RequestID: "m2", Operation: topics.OpRelease, LockName: "a", OwnerID: "worker-1", ReplyTo: malloryTopic}, as(mallory))
	require.Equal(t, topics.CodeForbidden, last(malloryTopic).ErrorCode, "namespace \"\" is not in her token")
	mallory = token("mallory")
	send(topics.Command{RequestID: "m3", Operation: topics.OpRelease, LockName: "a", OwnerID: "worker-1", ReplyTo: malloryTopic}, as(mallory))
	require.Equal(t, topics.CodeNotOwner, last(malloryTopic).ErrorCode)
	send(topics.Command{RequestID: "m4", Operation: topics.OpExtend, LockName: "a", OwnerID: "alice:worker-1", ReplyTo: malloryTopic}, as(mallory))
	require.Equal(t, topics.CodeNotOwner, last(malloryTopic).ErrorCode, "a scoped owner id read from an event does not help")
	send(topics.Command{RequestID: "m5", Operation: topics.OpRelease, LockName: "a", OwnerID: "worker-1", ReplyTo: aliceTopic}, as(mallory))
	forbidden := last(malloryTopic)
	require.Equal(t, topics.CodeForbidden, forbidden.ErrorCode, "answered on her own topic, not alice's")
	send(topics.Command{RequestID: "a1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "worker-1", ReplyTo: malloryTopic}, as(mallory))
	require.Equal(t, topics.CodeRequestIDConflict, last(malloryTopic).ErrorCode, "alice's stored outcome is not hers")
	require.Len(t, replies(aliceTopic), 1, "alice was written nothing")
	owner, status := holder()
	require.Equal(t, "alice:worker-1", owner)
	require.Equal(t, "acquired", status)

	// Alice releases with the owner id as she sent it, or as events show it.
	send(topics.Command{RequestID: "a2", Operation: topics.OpExtend, LockName: "a", OwnerID: "alice:worker-1", ReplyTo: aliceTopic}, as(alice))
	require.Equal(t, topics.TypeExtended, last(aliceTopic).Type)
	send(topics.Command{RequestID: "a3", Operation: topics.OpRelease, LockName: "a", OwnerID: "worker-1", ReplyTo: aliceTopic}, as(alice))
	require.Equal(t, topics.TypeReleased, last(aliceTopic).Type)

	// A query ignores owner_id: one as long as the contract allows is not
	// scoped, and so not refused for the length scoping would give it.
	send(topics.Command{RequestID: "a4", Operation: topics.OpQuery, LockName: "a", OwnerID: strings.Repeat("o", topics.MaxOwnerIDBytes), ReplyTo: aliceTopic}, as(alice))
	require.Equal(t, topics.TypeStatus, last(aliceTopic).Type, "%+v", last(aliceTopic))

	// An authorization header far past any token is refused before it is
	// copied and trimmed.
	dlqBefore = len(outboxRows(t, st, names.DeadLetter, 0))
	send(topics.Command{RequestID: "a5", Operation: topics.OpQuery, LockName: "a", ReplyTo: aliceTopic}, as(strings.Repeat(" ", 64<<10)+alice))
	dlq = outboxRows(t, st, names.DeadLetter, 0)[dlqBefore:]
	require.Len(t, dlq, 1)
	msg, _ = dlq[0].header(topics.HeaderError)
	require.Contains(t, msg, topics.CodeUnauthenticated+": ")
	require.Contains(t, msg, "header longer than")
}

// Under authentication, v above 1 is UNSUPPORTED_VERSION whatever the
// owner_id, as without: the length of the owner scoped by the requester is
// a field's rule, judged after v like any other, not a rule of who may do
// what. A valid command's scoped owner past the limit is refused for it.
func TestUnsupportedVersionIsJudgedBeforeTheScopedOwner(t *testing.T) {
	w, st, token := authWorker(t)
	p := w.newPartition(w.hard, 0)
	names := topics.DefaultNames()
	own := names.ReplyTopic("billing")
	long := strings.Repeat("o", topics.MaxOwnerIDBytes-5) // "billing:" takes it past the limit
	for i, tc := range []struct{ v, owner, code, msg string }{
		{"2", "w", topics.CodeUnsupportedVersion, ""},
		{"2", long, topics.CodeUnsupportedVersion, ""},
		{"1", long, topics.CodeInvalidRequest, "owner_id scoped by the requester"},
	} {
		v := []byte(fmt.Sprintf(`{"v":%s,"request_id":"v-%d","operation":"acquire","lock_name":"a","owner_id":%q,"reply_to":%q}`, tc.v, i, tc.owner, own))
		r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: int64(i), Key: []byte("a"), Value: v,
			Headers: []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(token("billing"))}}}
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
		evs := outboxEvents(t, st, own)
		require.Len(t, evs, i+1)
		got := evs[i]
		require.Equal(t, tc.code, got.ErrorCode, "v %s, owner_id of %d bytes: %s", tc.v, len(tc.owner), got.ErrorMessage)
		require.Contains(t, got.ErrorMessage, tc.msg)
	}
}

// Reply topics are bounded: commands naming new reply topics beyond
// MaxReplyTopics are refused in the dead-letter topic, and change nothing.
func TestReplyTopicsAreBounded(t *testing.T) {
	for _, create := range []bool{true, false} {
		w, st := newApplier(t)
		w.replies = newReplyTopics(w.cl, w.cfg.Names.ReplyPrefix, 3, create)
		p := w.newPartition(w.hard, 0)
		var recs []*kgo.Record
		for i := range 6 {
			c := topics.Command{RequestID: fmt.Sprint("r", i), Operation: topics.OpAcquire, LockName: fmt.Sprint("l", i), OwnerID: "o",
				ReplyTo: fmt.Sprint("locks.replies.t", i%5)}
			recs = append(recs, &kgo.Record{Topic: w.cfg.Names.Commands, Offset: int64(i), Key: []byte(c.LockName), Value: command(t, c)})
		}
		apply(w, segment{p: p, records: recs, polledAt: time.Now()})
		var granted int
		require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks`).Scan(&granted))
		dlq := outboxRows(t, st, w.cfg.Names.DeadLetter, 0)
		if !create {
			require.Zero(t, granted, "no reply topic exists and none may be created")
			require.Len(t, dlq, 6)
			continue
		}
		require.Equal(t, 4, granted, "t0, t1, t2 and t0 again")
		require.Len(t, dlq, 2, "t3 and t4 refused")
		msg, _ := dlq[0].header(topics.HeaderError)
		require.Contains(t, msg, topics.CodeForbidden+`: reply topic "locks.replies.t3" does not exist and may not be created`)
		require.Empty(t, outboxRows(t, st, "locks.replies.t3", 0), "nothing answered to a refused reply topic")
	}
}

// With authentication, a refusal is answered on the requester's own reply
// topic only where a valid command's answer would be: where it does not
// exist and MAX_REPLY_TOPICS is reached, each refusal (a reply_to not the
// requester's own, a namespace or a revoke it may not send, an owner_id
// too long once scoped) is answered only in the dead-letter topic, and no
// reply topic is created past the limit.
func TestRefusalsDoNotCreateReplyTopicsPastTheLimit(t *testing.T) {
	w, st, token := authWorker(t)
	w.replies = newReplyTopics(w.cl, w.cfg.Names.ReplyPrefix, 1, true)
	p := w.newPartition(w.hard, 0)
	names := topics.DefaultNames()
	off := int64(0)
	send := func(c topics.Command, tok string) {
		r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: off, Key: []byte("a"), Value: command(t, c),
			Headers: []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(tok)}}}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	}
	aliceTopic, malloryTopic := names.ReplyTopic("alice"), names.ReplyTopic("mallory")
	send(topics.Command{RequestID: "a1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "w", ReplyTo: aliceTopic}, token("alice"))
	require.Len(t, outboxRows(t, st, aliceTopic, 0), 1, "the one reply topic allowed")

	mallory := token("mallory", "public")
	for _, c := range []topics.Command{
		{RequestID: "m1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "w", ReplyTo: aliceTopic, Namespace: "public"},
		{RequestID: "m2", Operation: topics.OpAcquire, LockName: "a", OwnerID: "w", ReplyTo: malloryTopic},
		{RequestID: "m3", Operation: topics.OpRevoke, LockName: "a", OwnerID: "alice:w", ReplyTo: malloryTopic, Namespace: "public"},
		{RequestID: "m4", Operation: topics.OpAcquire, LockName: "a", OwnerID: strings.Repeat("o", topics.MaxOwnerIDBytes), ReplyTo: malloryTopic, Namespace: "public"},
	} {
		before := len(outboxRows(t, st, names.DeadLetter, 0))
		send(c, mallory)
		require.Empty(t, outboxRows(t, st, malloryTopic, 0), "%s: not answered on a reply topic past the limit", c.RequestID)
		dlq := outboxRows(t, st, names.DeadLetter, 0)
		require.Len(t, dlq, before+1, c.RequestID)
		msg, _ := dlq[before].header(topics.HeaderError)
		require.Contains(t, msg, `not answered: reply topic "`+malloryTopic+`" does not exist and may not be created`, c.RequestID)
	}
	require.Len(t, outboxRows(t, st, aliceTopic, 0), 1, "alice was written nothing more")
	var locks int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM locks WHERE namespace = 'public'`).Scan(&locks))
	require.Zero(t, locks, "nothing refused changed a lock")
}

// A record Decode refuses, naming a reply topic past MAX_REPLY_TOPICS,
// keeps Decode's code (INVALID_REQUEST, UNSUPPORTED_VERSION), as a refusal
// of the requester's rules keeps its own: it is answered only in the
// dead-letter topic, its message saying why, and the topic is not created.
// With authentication or without.
func TestDecodeRefusalsKeepTheirCodePastTheReplyTopicLimit(t *testing.T) {
	names := topics.DefaultNames()
	for _, authed := range []bool{false, true} {
		var w *Worker
		var st *store.Store
		tok := ""
		if authed {
			var token func(string, ...string) string
			w, st, token = authWorker(t)
			tok = token("mallory")
		} else {
			w, st = newApplier(t)
		}
		w.replies = newReplyTopics(w.cl, w.cfg.Names.ReplyPrefix, 0, true)
		p := w.newPartition(w.hard, 0)
		reply := names.ReplyTopic("mallory")
		for i, tc := range []struct{ value, code string }{
			{`{"v":1,"request_id":"d1","operation":"acquire","owner_id":"w","reply_to":"` + reply + `"}`, topics.CodeInvalidRequest},
			{`{"v":2,"request_id":"d2","reply_to":"` + reply + `"}`, topics.CodeUnsupportedVersion},
		} {
			r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: int64(i), Key: []byte("a"), Value: []byte(tc.value)}
			if authed {
				r.Headers = []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(tok)}}
			}
			before := len(outboxRows(t, st, names.DeadLetter, 0))
			apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
			dlq := outboxRows(t, st, names.DeadLetter, 0)
			require.Len(t, dlq, before+1, "authed %v: %s", authed, tc.code)
			msg, _ := dlq[before].header(topics.HeaderError)
			require.True(t, strings.HasPrefix(msg, tc.code+": "), "authed %v: %s", authed, msg)
			require.Contains(t, msg, `not answered: reply topic "`+reply+`" does not exist and may not be created`, "authed %v", authed)
			require.Empty(t, outboxRows(t, st, reply, 0), "authed %v: not answered on a reply topic past the limit", authed)
		}
	}
}

// Without AUTO_CREATE_REPLY_TOPICS, a command may name a reply topic its
// requester created just before producing it (as the SDK's New does), even
// when the topics were listed a moment before: the client's metadata cache
// is not asked.
func TestReplyTopicCreatedJustBeforeItsCommand(t *testing.T) {
	w, st := newApplier(t)
	w.replies = newReplyTopics(w.cl, w.cfg.Names.ReplyPrefix, 3, false)
	adm := kadm.NewClient(w.cl)
	_, err := adm.ListTopics(context.Background()) // fills the client's cache
	require.NoError(t, err)
	p := w.newPartition(w.hard, 0)
	send := func(offset int64, replyTo string) {
		c := topics.Command{RequestID: fmt.Sprint("r", offset), Operation: topics.OpAcquire, LockName: fmt.Sprint("l", offset), OwnerID: "o", ReplyTo: replyTo}
		apply(w, segment{p: p, polledAt: time.Now(),
			records: []*kgo.Record{{Topic: w.cfg.Names.Commands, Offset: offset, Key: []byte(c.LockName), Value: command(t, c)}}})
	}
	send(0, "locks.replies.missing")
	require.Len(t, outboxRows(t, st, w.cfg.Names.DeadLetter, 0), 1, "refused: it does not exist")

	_, err = adm.CreateTopic(context.Background(), 1, 1, nil, "locks.replies.new")
	require.NoError(t, err)
	send(1, "locks.replies.new")
	require.Len(t, outboxRows(t, st, "locks.replies.new", 0), 1, "answered")
	require.Len(t, outboxRows(t, st, w.cfg.Names.DeadLetter, 0), 1, "nothing more refused")

	// An invalid record is answered only where a valid one would be.
	apply(w, segment{p: p, polledAt: time.Now(), records: []*kgo.Record{{Topic: w.cfg.Names.Commands, Offset: 2,
		Value: []byte(`{"v":2,"request_id":"r2","reply_to":"locks.replies.other"}`)}}})
	require.Len(t, outboxRows(t, st, w.cfg.Names.DeadLetter, 0), 2)
	require.Empty(t, outboxRows(t, st, "locks.replies.other", 0))
}

// Kafka's trouble does not refuse commands: where the brokers do not
// answer, a reply topic not known is allowed as if it existed (its events
// park where it does not), and the brokers are not asked again at once.
func TestReplyTopicsUnanswered(t *testing.T) {
	c := kafkatest.Cluster(t)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	c.Close() // nothing answers
	rt := newReplyTopics(cl, "locks.replies.", 3, false)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	ok, _ := rt.allow(ctx, "locks.replies.a")
	require.True(t, ok)
	require.False(t, rt.failed.IsZero(), "the brokers did not answer")
	rt.failed = time.Now().Add(time.Hour) // within the second after it, however slow this machine
	ok, _ = rt.allow(context.Background(), "locks.replies.b")
	require.True(t, ok)
	require.Equal(t, 1, rt.lookups, "not asked again")
}

// A known reply topic is allowed without waiting for a lookup of another in
// flight: a slow broker answer holds only the commands naming topics not
// known.
func TestKnownReplyTopicDoesNotWaitForALookup(t *testing.T) {
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, "locks.replies.known"))
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	rt := newReplyTopics(cl, "locks.replies.", 10, false)
	ok, _ := rt.allow(context.Background(), "locks.replies.known")
	require.True(t, ok)

	held, release := kafkatest.HoldFirst(c, kmsg.Metadata)
	looked := make(chan bool, 1)
	go func() { ok, _ := rt.allow(context.Background(), "locks.replies.other"); looked <- ok }()
	<-held
	allowed := make(chan bool, 1)
	go func() { ok, _ := rt.allow(context.Background(), "locks.replies.known"); allowed <- ok }()
	select {
	case ok := <-allowed:
		require.True(t, ok)
	case <-time.After(4 * time.Second): // the lookup's own deadline is 5 s
		t.Fatal("the known topic waited for the lookup of another")
	}
	release()
	require.False(t, <-looked, "the other topic does not exist")
}

// Commands naming missing reply topics do not each cost a broker round
// trip: a topic the brokers said is missing is not asked about again for
// missingFor, nor more than maxLookups topics in a second; beyond that the
// list of all topics answers, read once a second.
func TestReplyTopicLookupsAreBounded(t *testing.T) {
	ctx := context.Background()
	w, _ := newApplier(t)
	rt := newReplyTopics(w.cl, "locks.replies.", 3, false)
	rt.second = time.Now().Add(time.Hour) // one second throughout, however slow this machine
	ok, _ := rt.allow(ctx, "locks.replies.gone")
	require.False(t, ok)
	rt.missing["locks.replies.gone"] = time.Now().Add(time.Hour) // within missingFor of the answer
	ok, _ = rt.allow(ctx, "locks.replies.gone")
	require.False(t, ok)
	require.Equal(t, 1, rt.lookups, "asked once")
	for i := range maxLookups - 1 {
		ok, _ := rt.allow(ctx, fmt.Sprint("locks.replies.x", i))
		require.False(t, ok)
	}
	require.Len(t, rt.missing, maxLookups, "the brokers asked about maxLookups topics")
	require.True(t, rt.listed.IsZero(), "no listing yet")

	// Beyond the bound, a topic created meanwhile is found in the listing.
	_, err := kadm.NewClient(w.cl).CreateTopic(ctx, 1, 1, nil, "locks.replies.late")
	require.NoError(t, err)
	ok, _ = rt.allow(ctx, "locks.replies.late")
	require.True(t, ok)
	require.Len(t, rt.missing, maxLookups, "not asked about on its own")
	require.False(t, rt.listed.IsZero())
}

// The count of reply topics follows the brokers: a topic deleted there no
// longer counts at the next listing, while one allowed as new counts until
// the relay has had time to create it.
func TestReplyTopicsCountFollowsTheBrokers(t *testing.T) {
	ctx := context.Background()
	w, _ := newApplier(t)
	adm := kadm.NewClient(w.cl)
	_, err := adm.CreateTopics(ctx, 1, 1, nil, "locks.replies.a", "locks.replies.b")
	require.NoError(t, err)
	rt := newReplyTopics(w.cl, "locks.replies.", 2, true)
	ok, n := rt.allow(ctx, "locks.replies.c")
	require.False(t, ok)
	require.Equal(t, 2, n)

	_, err = adm.DeleteTopics(ctx, "locks.replies.a")
	require.NoError(t, err)
	rt.listed = time.Time{} // as a second later
	ok, n = rt.allow(ctx, "locks.replies.c")
	require.True(t, ok, "a's place is free")
	require.Equal(t, 2, n)

	rt.listed = time.Time{}
	ok, _ = rt.allow(ctx, "locks.replies.d")
	require.False(t, ok, "c counts though the brokers do not have it yet")
}

// A request_id of the form the worker gives commands without one is the
// worker's: a requester that sends one is refused, so it cannot take the
// id of another's command at that offset and have it answered with its own
// outcome.
func TestGeneratedRequestIDsAreTheWorkers(t *testing.T) {
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	reply := "locks.replies.gen"
	send := func(offset int64, requestID, owner string) {
		c := topics.Command{RequestID: requestID, Operation: topics.OpAcquire, LockName: "g", OwnerID: owner, ReplyTo: reply}
		apply(w, segment{p: p, polledAt: time.Now(),
			records: []*kgo.Record{{Topic: w.cfg.Names.Commands, Offset: offset, Key: []byte("g"), Value: command(t, c)}}})
	}
	send(0, w.cfg.Names.Commands+"/0/1", "mallory")
	send(1, "", "alice")
	evs := outboxEvents(t, st, reply)
	require.Len(t, evs, 2)
	require.Equal(t, topics.CodeInvalidRequest, evs[0].ErrorCode)
	require.Equal(t, topics.TypeAcquired, evs[1].Type, "alice's command is applied")
	require.Equal(t, w.cfg.Names.Commands+"/0/1", evs[1].RequestID)
	require.Equal(t, "alice", evs[1].LockInfo.OwnerID)
}

// The refusal of a request_id of the worker's form is not answered under
// it: the reply_to the forger names may be another requester's, whose
// command at that offset gets that id; a client matching answers by it
// would take the refusal for its own while it holds the lock. The refusal
// carries no request_id, as one of a record sent without any does. So also
// when Decode refuses the record for another field.
func TestForgedGeneratedRequestIDIsNotAnsweredUnderIt(t *testing.T) {
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	reply := "locks.replies.victim"
	forged := w.cfg.Names.Commands + "/0/2"
	recs := []*kgo.Record{
		{Value: command(t, topics.Command{RequestID: forged, Operation: topics.OpAcquire, LockName: "g", OwnerID: "mallory", ReplyTo: reply})},
		{Value: []byte(`{"request_id":"` + forged + `","operation":"acquire","lock_name":"g","owner_id":"mallory","lease_duration":"x","reply_to":"` + reply + `"}`)},
		{Value: command(t, topics.Command{Operation: topics.OpAcquire, LockName: "g", OwnerID: "alice", ReplyTo: reply})},
		{Value: []byte(`{"operation":"acquire","lock_name":"g","owner_id":"bob","lease_duration":"x","reply_to":"` + reply + `"}`)},
	}
	for i, r := range recs {
		r.Topic, r.Offset, r.Key = w.cfg.Names.Commands, int64(i), []byte("g")
		apply(w, segment{p: p, polledAt: time.Now(), records: []*kgo.Record{r}})
	}
	evs := outboxEvents(t, st, reply)
	require.Len(t, evs, 4)
	for _, k := range []int{0, 1, 3} {
		require.Equal(t, topics.TypeRejected, evs[k].Type, k)
		require.Equal(t, topics.CodeInvalidRequest, evs[k].ErrorCode, k)
		require.Empty(t, evs[k].RequestID, "record %d: its refusal carries no request_id", k)
	}
	require.Contains(t, evs[0].ErrorMessage, forged, "the sender still learns which request_id was refused")
	require.Contains(t, evs[1].ErrorMessage, "lease_duration")
	require.Equal(t, topics.TypeAcquired, evs[2].Type)
	require.Equal(t, forged, evs[2].RequestID, "alice's command alone is answered under its generated request_id")
	require.Equal(t, "alice", evs[2].LockInfo.OwnerID)
}

// Where Kafka refuses the worker the right to create topics (which it
// checks before whether a topic exists), topics made beforehand are all
// EnsureTopics needs, and one missing is named.
func TestEnsureTopicsWithoutTheRightToCreate(t *testing.T) {
	ctx := context.Background()
	c := kafkatest.Cluster(t)
	w, err := New(Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(c.ListenAddrs()...)}, Store: testdb.New(t), Relay: nopRelay{}})
	require.NoError(t, err)
	t.Cleanup(w.cl.Close)
	t.Cleanup(w.killHard)
	n := w.cfg.Names
	adm := kadm.NewClient(w.cl)
	_, err = adm.CreateTopics(ctx, 1, 1, nil, n.Commands, n.Acquired, n.Released, n.Expired, n.Revoked, n.DeadLetter)
	require.NoError(t, err)
	refuse := kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.TopicAuthorizationFailed, Count: -1}
	refused := c.Fault(refuse)
	err = w.EnsureTopics(ctx)
	require.ErrorIs(t, err, kerr.TopicAuthorizationFailed)
	require.ErrorContains(t, err, fmt.Sprintf("topic %q: creating it was refused", n.State))

	refused.Remove()
	_, err = adm.CreateTopic(ctx, 1, 1, nil, n.State)
	require.NoError(t, err)
	c.Fault(refuse)
	require.NoError(t, w.EnsureTopics(ctx), "every topic was made beforehand")
}

// A requester that signs its own tokens (its public key in
// AUTH_REQUESTER_KEYS as billing.pem) is billing and nobody else: a token
// of its key naming another requester, or claiming admin, is
// UNAUTHENTICATED, dead-lettered, and answers nobody.
func TestRequesterKeyTokens(t *testing.T) {
	w, st := newApplier(t)
	dir := t.TempDir()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)
	der, err := x509.MarshalPKIXPublicKey(pub)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "billing.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600))
	w.cfg.Auth, err = auth.NewVerifier(auth.Config{RequesterKeysPath: dir})
	require.NoError(t, err)
	signed := func(sub string, admin bool) kgo.RecordHeader {
		c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Minute))}, Admin: admin}
		s, err := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c).SignedString(key)
		require.NoError(t, err)
		return kgo.RecordHeader{Key: topics.HeaderAuthorization, Value: []byte("Bearer " + s)}
	}
	p := w.newPartition(w.hard, 0)
	names := w.cfg.Names
	off := int64(0)
	send := func(c topics.Command, h kgo.RecordHeader) {
		r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: off, Key: []byte(c.LockName), Value: command(t, c), Headers: []kgo.RecordHeader{h}}
		off++
		apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	}
	billing, payments := names.ReplyTopic("billing"), names.ReplyTopic("payments")

	send(topics.Command{RequestID: "b1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "w", ReplyTo: billing}, signed("billing", false))
	require.Len(t, outboxRows(t, st, billing, 0), 1)
	require.Empty(t, outboxRows(t, st, names.DeadLetter, 0))

	send(topics.Command{RequestID: "p1", Operation: topics.OpAcquire, LockName: "b", OwnerID: "w", ReplyTo: payments}, signed("payments", false))
	send(topics.Command{RequestID: "b2", Operation: topics.OpRevoke, LockName: "a", Reason: "mine now", ReplyTo: billing}, signed("billing", true))
	dlq := outboxRows(t, st, names.DeadLetter, 0)
	require.Len(t, dlq, 2)
	for i, want := range []string{"named by the token's sub verifies it", "may not sign an admin claim"} {
		msg, _ := dlq[i].header(topics.HeaderError)
		require.True(t, strings.HasPrefix(msg, topics.CodeUnauthenticated+": "), msg)
		require.Contains(t, msg, want)
	}
	require.Empty(t, outboxRows(t, st, payments, 0), "nothing answered as payments")
	require.Len(t, outboxRows(t, st, billing, 0), 1, "nor to billing")
	var locks int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT count(*) FROM lock_holders`).Scan(&locks))
	require.Equal(t, 1, locks, "billing's lease stands, and payments got none")
}

// A command refused admission (here UNAUTHENTICATED, its reply_to not to
// be trusted) whose dead-letter copy PostgreSQL refuses for a while (a
// trigger refusing the first two) is not what PostgreSQL refuses of
// commands: the search for a culprit does not convict it, which answered it
// INVALID_REQUEST, rebuilt from its record, on the reply_to admission had
// taken from it. Once the copy is taken it is dead-lettered as refused,
// answering nobody.
func TestAdmissionRefusedRecordIsNotConvicted(t *testing.T) {
	w, st := newApplier(t)
	w.batchRetryBase = 10 * time.Millisecond
	secret := filepath.Join(t.TempDir(), "hmac")
	require.NoError(t, os.WriteFile(secret, []byte(strings.Repeat("k", topics.MinHMACSecretBytes)), 0o600))
	var err error
	w.cfg.Auth, err = auth.NewVerifier(auth.Config{HMACKeyFile: secret})
	require.NoError(t, err)
	names := w.cfg.Names
	refuseFirst(t, st, "outbox", "NEW.topic = '"+names.DeadLetter+"'", 2)

	victim := names.ReplyTopic("victim")
	r := &kgo.Record{Topic: names.Commands, Partition: 0, Offset: 0, Key: []byte("a"),
		Value: command(t, topics.Command{RequestID: "x1", Operation: topics.OpAcquire, LockName: "a", OwnerID: "w", ReplyTo: victim})}
	apply(w, segment{p: w.newPartition(w.hard, 0), records: []*kgo.Record{r}, polledAt: time.Now()})
	require.EqualValues(t, 1, storedOffset(t, st, 0))
	require.Empty(t, outboxRows(t, st, victim, 0), "nothing answered on the untrusted reply_to")
	dlq := outboxRows(t, st, names.DeadLetter, 0)
	require.Len(t, dlq, 1)
	msg, _ := dlq[0].header(topics.HeaderError)
	require.True(t, strings.HasPrefix(msg, topics.CodeUnauthenticated+": "), msg)
}

// Without AUTO_CREATE_REPLY_TOPICS the set of known reply topics does not
// keep every topic ever named: a lookup of a topic not known reads all
// topics at most once a minute, and topics deleted since are dropped (and
// refused again, as missing).
func TestDeletedReplyTopicsAreForgotten(t *testing.T) {
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, "locks.replies.a", "locks.replies.b"))
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	rt := newReplyTopics(cl, "locks.replies.", 10, false)
	for _, topic := range []string{"locks.replies.a", "locks.replies.b"} {
		ok, _ := rt.allow(context.Background(), topic)
		require.True(t, ok, topic)
	}
	_, err = kadm.NewClient(cl).DeleteTopics(context.Background(), "locks.replies.a")
	require.NoError(t, err)

	ok, n := rt.allow(context.Background(), "locks.replies.missing")
	require.False(t, ok)
	require.Equal(t, 2, n, "listed again within the minute")

	rt.pruned = time.Now().Add(-pruneEvery)
	ok, n = rt.allow(context.Background(), "locks.replies.missing-too")
	require.False(t, ok)
	require.Equal(t, 1, n, "the deleted topic is still known")
	ok, _ = rt.allow(context.Background(), "locks.replies.a")
	require.False(t, ok, "a deleted topic is allowed")
}
