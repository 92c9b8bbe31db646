package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/fuzzseeds"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// outboxRow is an outbox row as the relay would publish it.
type outboxRow struct {
	id           int64
	topic        string
	key, value   []byte
	headers      []topics.Header
	valueWasNull bool
}

func (r outboxRow) header(k string) (string, bool) {
	v, ok := "", false
	for _, h := range r.headers { // the last wins, as in the relay's records
		if h.Key == k {
			v, ok = string(h.Value), true
		}
	}
	return v, ok
}

// size is what the copy takes of a record: key, value and headers, each
// header with the lengths its row stores (deadLetterPerHeader).
func (r outboxRow) size() int {
	n := len(r.key) + len(r.value)
	for _, h := range r.headers {
		n += len(h.Key) + len(h.Value) + deadLetterPerHeader
	}
	return n
}

func outboxRows(t testing.TB, st *store.Store, topic string, after int64) []outboxRow {
	t.Helper()
	return outboxWhere(t, st, `topic = $1 AND id > $2`, topic, after)
}

// outboxEvents is the events in the outbox for topic, in order.
func outboxEvents(t testing.TB, st *store.Store, topic string) []topics.Event {
	t.Helper()
	var evs []topics.Event
	for _, row := range outboxRows(t, st, topic, 0) {
		var ev topics.Event
		require.NoError(t, json.Unmarshal(row.value, &ev))
		evs = append(evs, ev)
	}
	return evs
}

// outboxWhere is the outbox rows for which cond (SQL on args) holds, in
// order.
func outboxWhere(t testing.TB, st *store.Store, cond string, args ...any) []outboxRow {
	t.Helper()
	rows, err := st.Pool.Query(context.Background(), `SELECT id, topic, key, value, headers, value IS NULL FROM outbox WHERE `+cond+` ORDER BY id`, args...)
	require.NoError(t, err)
	var out []outboxRow
	var raw []byte
	var r outboxRow
	_, err = pgx.ForEachRow(rows, []any{&r.id, &r.topic, &r.key, &r.value, &raw, &r.valueWasNull}, func() error {
		v, hs, err := topics.DecodeOutboxRow(r.value, raw)
		if err != nil {
			return err
		}
		r.value, r.headers = v, hs
		out = append(out, r)
		r = outboxRow{}
		return nil
	})
	require.NoError(t, err)
	return out
}

func command(t testing.TB, c topics.Command) []byte {
	v, err := c.Encode()
	require.NoError(t, err)
	return v
}

// Records that are not commands, whatever their key, value, headers or
// size, are answered where possible, copied to the dead-letter topic within
// its bound, and do not stop the partition: the command after them is
// applied in the same batch.
func TestPoisonRecordsAreDeadLettered(t *testing.T) {
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 3)
	topic := topics.DefaultNames().Commands
	dlq := topics.DefaultNames().DeadLetter
	huge := bytes.Repeat([]byte("x"), 1_000_000)
	rec := func(off int64, key, value []byte, hs ...kgo.RecordHeader) *kgo.Record {
		return &kgo.Record{Topic: topic, Partition: 3, Offset: off, Key: key, Value: value, Headers: hs}
	}
	recs := []*kgo.Record{
		rec(0, []byte("k"), nil),   // a tombstone
		rec(1, nil, nil),           // no key, no value
		rec(2, []byte{}, []byte{}), // empty key and value
		rec(3, []byte{0xff, 0}, []byte{0, 1, 0xfe}, // binary, with headers claiming to be ours
			kgo.RecordHeader{Key: topics.HeaderError, Value: []byte("forged")}, kgo.RecordHeader{Key: "bin", Value: []byte{0, 0xff}},
			kgo.RecordHeader{Key: topics.HeaderTruncated, Value: []byte("value")},
			kgo.RecordHeader{Key: topics.HeaderOriginalValueSize, Value: []byte("1000000")},
			kgo.RecordHeader{Key: HeaderSourceLastOffset, Value: []byte("99")}),
		rec(4, bytes.Repeat([]byte("k"), 100_000), huge, kgo.RecordHeader{Key: "big", Value: bytes.Repeat([]byte("h"), 50_000)}),
		rec(5, []byte("ok"), command(t, topics.Command{RequestID: "after", Operation: topics.OpAcquire, LockName: "ok", OwnerID: "o",
			ReplyTo: "locks.replies.poison"})),
	}
	apply(w, segment{p: p, records: recs, polledAt: time.Now()})
	require.EqualValues(t, 6, storedOffset(t, st, 3), "every record consumed")
	require.EqualValues(t, 1, acquisitions(t, st, "ok"), "the command after them applied")

	copies := outboxRows(t, st, dlq, 0)
	require.Len(t, copies, 5)
	for i, c := range copies {
		off, _ := c.header(topics.HeaderSourceOffset)
		require.Equal(t, strconv.Itoa(i), off)
		part, _ := c.header(topics.HeaderSourcePartition)
		require.Equal(t, "3", part)
		src, _ := c.header(topics.HeaderSourceTopic)
		require.Equal(t, topic, src)
		msg, _ := c.header(topics.HeaderError)
		require.True(t, strings.HasPrefix(msg, topics.CodeInvalidRequest+": "), "the worker's error header wins: %q", msg)
		require.LessOrEqual(t, c.size(), DefaultDeadLetterMaxBytes+deadLetterHeaderBytes, "copy %d fits its bound", i)
	}
	// Null stays null, empty stays empty.
	require.Nil(t, copies[0].value)
	require.True(t, copies[0].valueWasNull)
	require.Equal(t, []byte("k"), copies[0].key)
	msg, _ := copies[0].header(topics.HeaderError)
	require.Contains(t, msg, "tombstone")
	require.Nil(t, copies[1].key)
	require.True(t, copies[1].valueWasNull)
	require.NotNil(t, copies[2].key)
	require.False(t, copies[2].valueWasNull)
	require.Equal(t, []byte{0, 1, 0xfe}, copies[3].value)
	require.Contains(t, copies[3].headers, topics.Header{Key: "bin", Value: []byte{0, 0xff}})
	// The producer's headers named like the worker's go under other
	// names: a copy that was not cut says nothing of a cut, nor of a
	// skipped batch.
	for _, name := range []string{topics.HeaderTruncated, topics.HeaderOriginalValueSize, HeaderSourceLastOffset} {
		_, ok := copies[3].header(name)
		require.False(t, ok, name)
	}
	for name, v := range map[string]string{"original_error": "forged", "original_truncated": "value",
		"original_original_value_size": "1000000", "original_source_last_offset": "99"} {
		got, _ := copies[3].header(name)
		require.Equal(t, v, got, name)
	}
	// The huge record is cut, and says so.
	big := copies[4]
	what, _ := big.header(topics.HeaderTruncated)
	require.Equal(t, "headers,key,value", what)
	for k, want := range map[string]string{topics.HeaderOriginalValueSize: "1000000", topics.HeaderOriginalKeySize: "100000",
		topics.HeaderOriginalHeaderCount: "1"} {
		got, _ := big.header(k)
		require.Equal(t, want, got, k)
	}
	require.Equal(t, DefaultDeadLetterMaxBytes/8, len(big.key))
	require.True(t, bytes.HasPrefix(huge, big.value))
	require.Equal(t, DefaultDeadLetterMaxBytes-2*len(big.key), len(big.value), "the key counted twice")
}

// A record of a million small headers (a producer can send one of empty
// headers in an uncompressed batch of 2 MB, and one of about 400,000
// within the decompressor's bounds in a compressed batch; of one name, the
// copy keeps one of them: these have names of their own) is copied to the
// dead-letter topic within the copy's bound: each header costs the lengths
// its row stores, not only its key and value (nothing, for an empty one),
// so its headers are cut at a quarter of the bound and the copy says so,
// where all of them went into one row of megabytes.
func TestDeadLetterCopyOfManySmallHeadersKeepsItsBound(t *testing.T) {
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	const million = 1 << 20
	r := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: 0, Key: []byte("k"), Value: []byte("not a command"),
		Headers: make([]kgo.RecordHeader, million)}
	for i := range r.Headers {
		r.Headers[i].Key = strconv.Itoa(i)
	}
	key, value, hs := deadLetter(r, topics.CodeInvalidRequest+": not JSON", DefaultDeadLetterMaxBytes)
	require.LessOrEqual(t, len(key)+len(value)+len(topics.EncodeHeaders(nil, hs)), DefaultDeadLetterMaxBytes+deadLetterHeaderBytes)

	apply(w, segment{p: p, records: []*kgo.Record{r}, polledAt: time.Now()})
	require.EqualValues(t, 1, storedOffset(t, st, 0))
	copies := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, copies, 1)
	c := copies[0]
	require.LessOrEqual(t, c.size(), DefaultDeadLetterMaxBytes+deadLetterHeaderBytes)
	var row int
	require.NoError(t, st.Pool.QueryRow(context.Background(), `SELECT octet_length(headers) FROM outbox WHERE id = $1`, c.id).Scan(&row))
	require.LessOrEqual(t, row, DefaultDeadLetterMaxBytes/4+deadLetterHeaderBytes, "the row's headers column")
	require.Equal(t, []byte("k"), c.key)
	require.Equal(t, []byte("not a command"), c.value)
	what, _ := c.header(topics.HeaderTruncated)
	require.Equal(t, "headers", what)
	count, _ := c.header(topics.HeaderOriginalHeaderCount)
	require.Equal(t, strconv.Itoa(million), count)
	own, size := 0, 0
	for _, h := range c.headers {
		if h.Key == strconv.Itoa(own) {
			size += len(h.Key) + deadLetterPerHeader
			own++
		}
	}
	require.LessOrEqual(t, size, DefaultDeadLetterMaxBytes/4)
	require.Greater(t, size+len(strconv.Itoa(own))+deadLetterPerHeader, DefaultDeadLetterMaxBytes/4,
		"whole headers, in order, up to a quarter of the bound")
}

// A command that passes validation but that PostgreSQL refuses (here a
// constraint the test adds) fails its batch on every retry; the worker
// finds it, answers it INVALID_REQUEST and dead-letters it, and applies the
// rest of the batch, before and after it, in the same partitions. One sent
// without a request_id is answered under the one its record's place gives
// it, as any other answer to it.
func TestCommandPostgreSQLRefusesIsQuarantined(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	_, err := st.Pool.Exec(ctx, `ALTER TABLE locks ADD CONSTRAINT test_no_poison CHECK (lock_name NOT LIKE 'poison%')`)
	require.NoError(t, err)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	reply := "locks.replies.q"
	acq := func(p int32, off int64, lock string) *kgo.Record {
		id := "q-" + lock
		if lock == "poison-2" {
			id = ""
		}
		return &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: p, Offset: off, Key: []byte(lock),
			Value: command(t, topics.Command{RequestID: id, Operation: topics.OpAcquire, LockName: lock, OwnerID: "o", ReplyTo: reply})}
	}
	apply(w,
		segment{p: p0, records: []*kgo.Record{acq(0, 0, "a"), acq(0, 1, "poison-1"), acq(0, 2, "b")}, polledAt: time.Now()},
		segment{p: p1, records: []*kgo.Record{acq(1, 0, "c"), acq(1, 1, "poison-2"), acq(1, 2, "d")}, polledAt: time.Now()},
	)
	require.EqualValues(t, 3, storedOffset(t, st, 0))
	require.EqualValues(t, 3, storedOffset(t, st, 1))
	for _, lock := range []string{"a", "b", "c", "d"} {
		require.EqualValues(t, 1, acquisitions(t, st, lock), lock)
	}
	answers := answersOn(t, st, reply)
	for _, id := range []string{"q-poison-1", topics.DefaultNames().Commands + "/1/1"} {
		ev := answers[id]
		require.Equal(t, topics.TypeRejected, ev.Type, id)
		require.Equal(t, topics.CodeInvalidRequest, ev.ErrorCode)
		require.Contains(t, ev.ErrorMessage, "PostgreSQL refused to apply the command")
		require.Contains(t, ev.ErrorMessage, "23514")
	}
	require.Equal(t, topics.TypeAcquired, answers["q-d"].Type)
	copies := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, copies, 2)
	var n int
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM processed_requests WHERE request_id LIKE 'q-poison%'`).Scan(&n))
	require.Zero(t, n, "a refused command stores no outcome: sent again, it is judged again")
}

// A refused command behind records applied before (a partition taken over
// and polled again from an older offset) is quarantined like any other: the
// search does not take a prefix of only those records for the culprit,
// which made the batch retry at once, for ever.
func TestCommandPostgreSQLRefusesAfterRedelivery(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	_, err := st.Pool.Exec(ctx, `ALTER TABLE locks ADD CONSTRAINT test_no_poison CHECK (lock_name NOT LIKE 'poison%')`)
	require.NoError(t, err)
	apply(w, seg(t, w.newPartition(w.hard, 0), 0, "a", "b", "c", "d"))
	require.EqualValues(t, 4, storedOffset(t, st, 0))

	// A new owner does not know the offset, and gets records 0..4.
	p := w.newPartition(w.hard, 0)
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	p.pending.Add(1)
	w.applySegments(tctx, []segment{{p: p, records: records(t, 0, 0, "a", "b", "c", "d", "poison"), polledAt: time.Now()}})
	require.NoError(t, tctx.Err(), "the batch was never applied")
	require.EqualValues(t, 5, storedOffset(t, st, 0), "the refused record is dead-lettered and the partition moves on")
	require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), 1)
}

// FuzzApplyRecord drives any record (key, value, two headers, with
// authentication on or off), alone or between two valid commands of its
// batch, through the worker's applier into a real PostgreSQL transaction
// (recordFuzz.run says what it checks). `go test` runs the seeds, among
// them FuzzDecode's (fuzzseeds), records PostgreSQL refuses; `go test
// -fuzz FuzzApplyRecord ./worker` explores.
func FuzzApplyRecord(f *testing.F) {
	h := newRecordFuzz(f)
	valid := func(c topics.Command) []byte { return command(f, c) }
	acquire := valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"})
	bearer := []byte(h.token("f"))
	admin := []byte(authWorkerToken(f, "f", true))
	authz := func(v []byte) kgo.RecordHeader { return kgo.RecordHeader{Key: topics.HeaderAuthorization, Value: v} }
	copied := func(replyTo string) []byte {
		return []byte(`{"request_id":"copied","operation":"acquire","lock_name":"c","owner_id":"o","max_hold":1e-400,"reply_to":"` + replyTo + `"}`)
	}
	seeds := []struct {
		key, value       []byte
		nilKey, nilValue bool
		auth             bool
		h1, h2           kgo.RecordHeader
		repeatValue      int
		batch            bool
	}{
		{key: []byte("k"), nilValue: true},
		{nilKey: true, nilValue: true},
		{key: []byte{}, value: []byte{}},
		{key: []byte("x"), value: []byte("x"), repeatValue: 1_000_000},
		{key: []byte{0xff}, value: []byte{0xfe, 0, 0xff}, auth: true, h1: kgo.RecordHeader{Key: "error", Value: []byte{0}}},
		{key: []byte("a"), value: acquire},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpRelease, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"})},
		{key: []byte("a"), value: []byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"\u0000"}}`), batch: true},
		{key: []byte("a"), value: []byte(`{"operation":"cleanup","lock_name":"*","max_age_seconds":0}`), batch: true},
		{key: []byte("a"), value: []byte(`{"v":2,"operation":"steal"}`)},
		{key: []byte("a"), value: []byte(`{"operation":"acquire","lock_name":"` + strings.Repeat("é", 200) + `","owner_id":"o"}`)},
		{key: []byte("a"), value: acquire, auth: true, h1: authz([]byte("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJmIn0."))},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpQuery, LockName: "a", ReplyTo: "locks.replies.f"}),
			auth: true, h1: kgo.RecordHeader{Key: "Authorization", Value: bytes.Repeat([]byte("A"), 10_000)}},
		{key: []byte("a"), value: acquire, auth: true, h1: authz(bearer)},
		{key: []byte("a"), value: acquire, auth: true, batch: true},
		// Two tokens (admit refuses any but one), and one beside the
		// headers the relay and tracing read.
		{key: []byte("a"), value: acquire, auth: true, h1: authz(bearer), h2: kgo.RecordHeader{Key: "AUTHORIZATION", Value: bearer}},
		{key: []byte("a"), value: acquire, auth: true, h1: authz(bearer), h2: kgo.RecordHeader{Key: topics.HeaderCEID, Value: []byte{0xff}}, batch: true},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f",
			OwnerMetadata: []byte(`{"a":{"b":[1e308,-1e-300,0.000000000000000000001,123456789012345678901234567890]},"a":"\u00e9"}`)}),
			auth: true, h1: authz([]byte(h.token("f", "", "ns"))), h2: kgo.RecordHeader{Key: "traceparent", Value: []byte("00-zz")}},
		{key: []byte("s"), value: valid(topics.Command{Operation: topics.OpSessionOpen, SessionID: "s", OwnerID: "o", TTL: 60, ReplyTo: "locks.replies.f"})},
		// Refused by the requester's rules, answered on its own topic
		// only; and accepted within the namespaces its token allows.
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.other"}),
			auth: true, h1: authz(bearer)},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpRevoke, LockName: "a", OwnerID: "f:o", Reason: "r", ReplyTo: "locks.replies.f"}),
			auth: true, h1: authz(bearer)},
		{key: []byte("ns/a"), value: valid(topics.Command{Operation: topics.OpAcquire, Namespace: "ns", LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"}),
			auth: true, h1: authz([]byte(h.token("f", "ns"))), batch: true},
		// An admin's revoke of another requester's lease, told on its
		// holder's reply topic.
		{key: []byte("r"), value: valid(topics.Command{Operation: topics.OpAcquire, LockName: "r", OwnerID: "x:o", ReplyTo: "locks.replies.x"})},
		{key: []byte("r"), value: valid(topics.Command{Operation: topics.OpRevoke, LockName: "r", OwnerID: "x:o", Reason: "r", ReplyTo: "locks.replies.f"}),
			auth: true, h1: authz(admin), batch: true},
		{key: []byte("other/a"), value: valid(topics.Command{Operation: topics.OpAcquire, Namespace: "other", LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"}),
			auth: true, h1: authz([]byte(h.token("f", "ns")))},
		{key: []byte("a"), value: []byte(`{"operation":"release","lock_name":"a","owner_id":"o","fencing_token":-9223372036854775808}`), batch: true},
		// Copies Decode refuses of a request applied before them (seeds
		// run in order): answered from its stored outcome, from another
		// reply_to REQUEST_ID_CONFLICT; with a token, from the requester's
		// own topic. And one whose request_id PostgreSQL's text cannot
		// hold, which must not fail the lookup.
		{key: []byte("c"), value: valid(topics.Command{RequestID: "copied", Operation: topics.OpAcquire, LockName: "c", OwnerID: "o", ReplyTo: "locks.replies.f"})},
		{key: []byte("c"), value: copied("locks.replies.f")},
		{key: []byte("c"), value: copied("locks.replies.g"), batch: true},
		{key: []byte("c"), value: copied("locks.replies.f"), auth: true, h1: authz(bearer), batch: true},
		{key: []byte("c"), value: []byte(`{"request_id":"\u0000","operation":"acquire","lock_name":"c","max_hold":1e-400,"reply_to":"locks.replies.f"}`)},
	}
	for _, s := range seeds {
		v := s.value
		if s.repeatValue > 0 {
			v = bytes.Repeat(v, s.repeatValue)
		}
		f.Add(s.key, v, s.nilKey, s.nilValue, s.auth, s.h1.Key, s.h1.Value, s.h2.Key, s.h2.Value, s.batch)
	}
	// FuzzDecode's: alone without authentication, and with a valid token
	// between valid commands.
	for _, v := range fuzzseeds.Commands() {
		f.Add([]byte("a"), v, false, false, false, "", []byte(nil), "", []byte(nil), false)
		f.Add([]byte("a"), v, false, false, true, topics.HeaderAuthorization, bearer, "", []byte(nil), true)
	}
	f.Fuzz(func(t *testing.T, key, value []byte, nilKey, nilValue, auth bool, k1 string, v1 []byte, k2 string, v2 []byte, batch bool) {
		if nilKey {
			key = nil
		}
		if nilValue {
			value = nil
		}
		in := fuzzRecord{key: key, value: value, auth: auth, batch: batch}
		for _, hd := range []kgo.RecordHeader{{Key: k1, Value: v1}, {Key: k2, Value: v2}} {
			if hd.Key != "" || len(hd.Value) > 0 {
				in.headers = append(in.headers, hd)
			}
		}
		h.run(t, in)
	})
}

// fuzzRecord is one input of FuzzApplyRecord.
type fuzzRecord struct {
	key, value []byte
	headers    []kgo.RecordHeader
	auth       bool // authentication on, whatever the headers
	batch      bool // between two valid commands of its batch
}

// goodNamespace holds the valid commands around a fuzzed record, whose
// writes run tells from the fuzzed record's.
const goodNamespace = "fuzz-good"

// recordFuzz is FuzzApplyRecord's applier, on a database of its own, and
// its checks (run), which a test of them drives too.
type recordFuzz struct {
	w        *Worker
	st       *store.Store
	p        *partition
	verifier *auth.Verifier
	token    func(sub string, namespaces ...string) string
	good     []byte // the valid commands' token
}

func newRecordFuzz(t testing.TB) *recordFuzz {
	w, st, token := authWorker(t)
	// Every row a transaction writes, inserts or deletes in the tables a
	// command may change, with the transaction that did it: the expiry
	// scheduler ends fuzzed leases beside the applier, so the tables
	// before and after a batch differ by more than the batch.
	_, err := st.Pool.Exec(context.Background(), `
		CREATE TABLE fuzz_writes (xid xid NOT NULL, tbl text NOT NULL, op text NOT NULL,
			namespace text, lock_name text, owner_id text, request_id text, reply_to text);
		CREATE INDEX ON fuzz_writes USING hash (xid);
		CREATE FUNCTION fuzz_note_write() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE r jsonb := CASE TG_OP WHEN 'DELETE' THEN to_jsonb(OLD) ELSE to_jsonb(NEW) END;
		BEGIN
			INSERT INTO fuzz_writes VALUES (xid(pg_current_xact_id()), TG_TABLE_NAME, TG_OP,
				r->>'namespace', r->>'lock_name', r->>'owner_id', r->>'request_id', r->>'reply_to');
			RETURN NULL;
		END $$;
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON locks FOR EACH ROW EXECUTE FUNCTION fuzz_note_write();
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON lock_holders FOR EACH ROW EXECUTE FUNCTION fuzz_note_write();
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON lock_waiters FOR EACH ROW EXECUTE FUNCTION fuzz_note_write();
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION fuzz_note_write();
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON lock_events FOR EACH ROW EXECUTE FUNCTION fuzz_note_write();
		CREATE TRIGGER fuzz_note AFTER INSERT OR UPDATE OR DELETE ON processed_requests FOR EACH ROW EXECUTE FUNCTION fuzz_note_write()`)
	require.NoError(t, err)
	return &recordFuzz{w: w, st: st, p: w.newPartition(w.hard, 0), verifier: w.cfg.Auth, token: token,
		good: []byte(token("f", goodNamespace))}
}

// fuzzWrite is a row the fuzz_writes trigger noted.
type fuzzWrite struct {
	Table, Op              string
	Namespace              *string // nil in a table without namespaces
	Lock, Owner, RequestID string
	ReplyTo                string // of a holder, waiter or session
}

func (w fuzzWrite) String() string {
	ns := "-"
	if w.Namespace != nil {
		ns = strconv.Quote(*w.Namespace)
	}
	return fmt.Sprintf("%s %s (namespace %s, lock %q, owner %q, request %q)", w.Op, w.Table, ns, w.Lock, w.Owner, w.RequestID)
}

// fuzzJudgement is what run expects of a record, judged before its batch
// from the record alone (Decode, admit, the token) and the outcome stored
// under its request_id, not from what the applier did with it.
type fuzzJudgement struct {
	refused   bool
	requestID string          // as Decode read it
	replyTo   string          // where a refusal, or an accepted record's answer, goes; "" nowhere
	who       *auth.Requester // the token's requester, authentication on and the token valid
	// mustRefuse is why the requester's rules, read from the record and
	// its token here rather than through admit, refuse it ("" if they do
	// not): admit's word alone would let whatever it wrongly accepts pass.
	mustRefuse string
	// repeats is, for a refused record that is a copy of a request with a
	// stored outcome (one answered on its reply_to, the requester's rules
	// not refusing it, its request_id not of the worker's form), what it is
	// answered with instead of its refusal, as any copy (design.md,
	// Idempotency): the stored outcome's event_id, or REQUEST_ID_CONFLICT
	// for a copy from another reply_to. "" for any other record.
	repeats string
}

func (h *recordFuzz) judge(t testing.TB, ctx context.Context, r *kgo.Record) fuzzJudgement {
	names := h.w.cfg.Names
	c, err := topics.Decode(r.Value, names.ReplyPrefix)
	if err != nil {
		c = err.(*topics.Rejection).Command
	} else {
		_, err = h.w.admit(ctx, c, r)
	}
	j := fuzzJudgement{refused: err != nil, requestID: c.RequestID}
	if h.w.cfg.Auth != nil {
		if token, ok := authorizationOf(r); ok {
			if who, err := h.verifier.Verify(token); err == nil {
				j.who = &who
			}
		}
		switch {
		case j.who == nil:
			j.mustRefuse = "carries no valid token"
		case c.ReplyTo != "" && c.ReplyTo != names.ReplyTopic(j.who.Name):
			j.mustRefuse = fmt.Sprintf("names reply topic %q, not its requester %q's own", c.ReplyTo, j.who.Name)
		case !j.who.MayUse(c.Namespace):
			j.mustRefuse = fmt.Sprintf("names namespace %q, which its token does not allow", c.Namespace)
		case c.Operation == topics.OpRevoke && !j.who.Admin: // admit.go's only administrative operation
			j.mustRefuse = "is a revoke whose token has no admin claim"
		}
	}
	if topics.ValidReplyTo(c.ReplyTo, names.ReplyPrefix) {
		switch {
		case h.w.cfg.Auth == nil:
			j.replyTo = c.ReplyTo
		case j.who != nil: // the requester's own topic, whichever it named
			j.replyTo = names.ReplyTopic(j.who.Name)
		}
	}
	if j.refused && j.replyTo != "" && j.mustRefuse == "" && !strings.HasPrefix(c.RequestID, names.Commands+"/") {
		j.repeats = h.storedAnswer(t, ctx, c.RequestID, j.replyTo)
	}
	return j
}

// storedAnswer is what a copy of request id from replyTo is answered with
// (fuzzJudgement.repeats), "" if id has no stored outcome. Compared as
// bytes: id may be one PostgreSQL's text cannot hold, never stored.
func (h *recordFuzz) storedAnswer(t testing.TB, ctx context.Context, id, replyTo string) string {
	var raw []byte
	var stored *string
	err := h.st.Pool.QueryRow(ctx, `SELECT outcome, reply_to FROM processed_requests WHERE convert_to(request_id, 'UTF8') = $1`, []byte(id)).
		Scan(&raw, &stored)
	if err == pgx.ErrNoRows {
		return ""
	}
	require.NoError(t, err)
	if stored != nil && *stored != replyTo {
		return topics.CodeRequestIDConflict
	}
	v, err := topics.ExpandEvent(raw)
	require.NoError(t, err)
	ev, err := topics.DecodeEvent(v)
	require.NoError(t, err)
	return ev.EventID
}

// authorizationOf is the record's token as design.md says a command
// carries it: its one authorization header (the name case-insensitive), of
// at most 16 KiB; false if it has none, more than one or a longer one. Read
// here, not with admit's recordToken, so that the judge does not share what
// it judges.
func authorizationOf(r *kgo.Record) (string, bool) {
	var tokens []string
	for _, hd := range r.Headers {
		if strings.EqualFold(hd.Key, topics.HeaderAuthorization) {
			tokens = append(tokens, string(hd.Value))
		}
	}
	if len(tokens) != 1 || len(tokens[0]) > 2*topics.MaxTokenBytes {
		return "", false
	}
	return tokens[0], true
}

// run applies in as the poll loop hands records over, and checks that the
// batch commits within 30 s and the partition's offset moves past it; that
// the valid commands around in are applied, once each; that in is applied
// or refused as Decode and admit judge it, never convicted by the poison
// search, which only PostgreSQL refusing what those let through reaches.
// A record refused has exactly one dead-letter copy, of its offset, within
// its bound and without the token; its transaction writes no row of the
// tables a command changes (locks, holders, waiters, sessions, history,
// stored outcomes) beyond the valid commands' own, and to the outbox
// nothing beyond their rows and the copy but one lock.rejected of its
// request_id on its reply_to, if that is a reply topic (with
// authentication, its requester's own, and none without a valid token).
// A record accepted has no copy, and is one the requester's rules, read
// from the record and its token (not through admit), accept: with
// authentication, it carries one valid token, names no reply topic but its
// requester's own and no namespace its token does not allow, and is no
// revoke without the admin claim. Its writes to reply topics go to its own
// reply_to (with authentication, its requester's own topic) or to those of
// the holders, waiters and sessions it ended. With authentication, its
// writes stay within the namespaces its token allows, and the holders,
// waiters and sessions it writes are its requester's scoped owners' (a
// holder also a waiter it granted).
func (h *recordFuzz) run(t testing.TB, in fuzzRecord) {
	ctx := context.Background()
	names := topics.DefaultNames()
	h.w.cfg.Auth = nil
	if in.auth {
		h.w.cfg.Auth = h.verifier
	}
	// From where the partition and the outbox are, not from where the
	// last input to pass left them: after a failure the minimiser runs
	// its candidates in this process.
	off := max(h.p.expected, 0)
	var lastOutbox int64
	require.NoError(t, h.st.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&lastOutbox))
	r := &kgo.Record{Topic: names.Commands, Partition: h.p.id, Offset: off, Key: in.key, Value: in.value, Headers: in.headers}
	recs := []*kgo.Record{r}
	lock := "g" + strconv.FormatInt(off, 10)
	good := func(off int64, op string) *kgo.Record {
		g := &kgo.Record{Topic: names.Commands, Partition: h.p.id, Offset: off, Key: []byte(lock),
			Value: command(t, topics.Command{RequestID: lock + op, Operation: op, Namespace: goodNamespace, LockName: lock, OwnerID: "g",
				ReplyTo: "locks.replies.f"})}
		if in.auth {
			g.Headers = []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: h.good}}
		}
		return g
	}
	if in.batch {
		r.Offset = off + 1
		recs = []*kgo.Record{good(off, topics.OpAcquire), r, good(off+2, topics.OpRelease)}
	}
	want := h.judge(t, ctx, r)
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h.p.pending.Add(1)
	h.w.applySegments(actx, []segment{{p: h.p, records: recs, polledAt: time.Now()}})
	require.NoError(t, actx.Err(), "the batch was applied or refused within 30 s")
	next := recs[len(recs)-1].Offset + 1
	require.Equal(t, next, h.p.expected, "the partition moved past the batch")
	require.Equal(t, next, storedOffset(t, h.st, h.p.id))

	// What the batch's transaction wrote: it moved the offset last.
	const batchXact = `(SELECT xmin FROM consumer_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3)`
	xact := []any{h.w.cfg.Group, names.Commands, h.p.id}
	goodOwner := "g" // as stored: scoped by the good token's requester
	if in.auth {
		goodOwner = topics.ScopedOwner("f", goodOwner)
	}
	// The rows the fuzzed record wrote, read only where they are judged.
	writtenByIt := func() []fuzzWrite {
		rows, err := h.st.Pool.Query(ctx, `SELECT tbl, op, namespace, coalesce(lock_name, ''), coalesce(owner_id, ''), coalesce(request_id, ''),
			coalesce(reply_to, '') FROM fuzz_writes WHERE xid = `+batchXact, xact...)
		require.NoError(t, err)
		writes, err := pgx.CollectRows(rows, pgx.RowToStructByPos[fuzzWrite])
		require.NoError(t, err)
		var its []fuzzWrite
		for _, w := range writes {
			valid := w.Namespace != nil && *w.Namespace == goodNamespace && w.Lock == lock && (w.Owner == "" || w.Owner == goodOwner) ||
				w.Table == "processed_requests" && (w.RequestID == lock+topics.OpAcquire || w.RequestID == lock+topics.OpRelease)
			if !in.batch || !valid {
				its = append(its, w)
			}
		}
		return its
	}
	var copies, goodRows, others []outboxRow
	for _, row := range outboxWhere(t, h.st, `id > $4 AND xmin = `+batchXact, append(xact, lastOutbox)...) {
		switch {
		case row.topic == names.DeadLetter:
			copies = append(copies, row)
		case in.batch && string(row.key) == topics.LockKey(goodNamespace, lock):
			goodRows = append(goodRows, row)
		default:
			others = append(others, row)
		}
	}

	for _, c := range copies {
		reason, _ := c.header(topics.HeaderError)
		require.NotContains(t, reason, "PostgreSQL refused to apply the command", // convict's words
			"a record Decode and admit let through was convicted by the poison search")
		source, _ := c.header(topics.HeaderSourceOffset)
		require.Equal(t, strconv.FormatInt(r.Offset, 10), source, "the copy is the fuzzed record's")
		require.LessOrEqual(t, c.size(), DefaultDeadLetterMaxBytes+deadLetterHeaderBytes)
		for _, hd := range c.headers {
			if strings.EqualFold(hd.Key, topics.HeaderAuthorization) {
				require.Equal(t, topics.RedactedToken, string(hd.Value), "no token reaches the dead-letter topic")
			}
		}
	}
	if !want.refused {
		require.Empty(t, copies, "an accepted record was dead-lettered")
		require.Empty(t, want.mustRefuse, "an accepted record %s", want.mustRefuse)
		writes := writtenByIt()
		if want.who != nil {
			requireScoped(t, *want.who, writes)
		}
		// Its answers go to its own reply topic; others' only to the
		// holders, waiters and sessions it ended (a lease revoked, a
		// waiter granted), on the reply topics they named.
		told := map[string]bool{want.replyTo: true}
		for _, w := range writes {
			if w.Op == "DELETE" {
				told[w.ReplyTo] = true
			}
		}
		for _, row := range others {
			require.False(t, strings.HasPrefix(row.topic, names.ReplyPrefix) && !told[row.topic],
				"an accepted record was answered on %s, neither its own reply topic (%q) nor one of a holder, waiter or session it ended (authentication %v)",
				row.topic, want.replyTo, in.auth)
		}
	} else if want.repeats != "" {
		require.Empty(t, copies, "a copy of a stored request was dead-lettered")
		require.Empty(t, writtenByIt(), "a copy of a stored request changed the rows")
		require.Len(t, others, 1, "a copy of a stored request is answered once on %s, and writes nothing else to the outbox", want.replyTo)
		require.Equal(t, want.replyTo, others[0].topic, "a copy of a stored request was answered on a topic it may not be")
		ev, err := topics.DecodeEvent(others[0].value)
		require.NoError(t, err)
		require.Equal(t, want.requestID, ev.RequestID)
		if want.repeats == topics.CodeRequestIDConflict {
			require.Equal(t, topics.CodeRequestIDConflict, ev.ErrorCode, "a copy from another reply_to")
		} else {
			require.Equal(t, want.repeats, ev.EventID, "a copy of a stored request is answered with its stored outcome")
		}
	} else {
		require.Len(t, copies, 1, "a refused record has one dead-letter copy")
		reason, _ := copies[0].header(topics.HeaderError)
		require.Empty(t, writtenByIt(), "a refused record (%s) changed the rows", reason)
		if want.replyTo == "" {
			require.Empty(t, others, "a refused record (%s) was answered, or wrote to the outbox, where it may not be (authentication %v)", reason, in.auth)
		} else {
			require.Len(t, others, 1, "a refused record (%s) is answered once on %s, and writes nothing else to the outbox", reason, want.replyTo)
			require.Equal(t, want.replyTo, others[0].topic, "a refused record (%s) was answered on a topic it may not be", reason)
			ev, err := topics.DecodeEvent(others[0].value)
			require.NoError(t, err)
			require.Equal(t, topics.TypeRejected, ev.Type)
			require.Equal(t, want.requestID, ev.RequestID)
		}
	}
	if in.batch {
		answers := map[string][]string{}
		for _, row := range goodRows {
			if row.topic != "locks.replies.f" {
				continue
			}
			ev, err := topics.DecodeEvent(row.value)
			require.NoError(t, err)
			answers[ev.RequestID] = append(answers[ev.RequestID], ev.Type)
		}
		require.Equal(t, []string{topics.TypeAcquired}, answers[lock+topics.OpAcquire], "the command before the fuzzed record was applied once")
		require.Equal(t, []string{topics.TypeReleased}, answers[lock+topics.OpRelease], "the command after it was applied once")
		require.EqualValues(t, 1, acquisitions(t, h.st, lock))
	}
}

// requireScoped checks that writes, those of a record of requester who
// accepted, stay within the namespaces its token allows, and that the
// holders, waiters and sessions they insert or change are its scoped
// owners'; a holder of another owner only as the waiter granted (deleted)
// beside it. They may end other owners' (an expired lease, a timed-out
// wait).
func requireScoped(t testing.TB, who auth.Requester, writes []fuzzWrite) {
	granted := map[[3]string]bool{}
	for _, w := range writes {
		if w.Table == "lock_waiters" && w.Op == "DELETE" {
			granted[[3]string{*w.Namespace, w.Lock, w.Owner}] = true
		}
	}
	for _, w := range writes {
		if w.Namespace != nil {
			require.True(t, who.MayUse(*w.Namespace), "requester %q's record wrote %v, a namespace its token does not allow", who.Name, w)
		}
		if w.Op == "DELETE" || strings.HasPrefix(w.Owner, who.Name+":") {
			continue
		}
		switch w.Table {
		case "lock_holders":
			require.True(t, granted[[3]string{*w.Namespace, w.Lock, w.Owner}], "requester %q's record wrote %v: an owner not scoped by it, and no waiter granted", who.Name, w)
		case "lock_waiters", "sessions":
			require.Fail(t, "an owner not scoped", "requester %q's record wrote %v", who.Name, w)
		}
	}
}

// FuzzApplyRecord's checks fail on a record Decode and admit let through
// and PostgreSQL refuses (a CHECK constraint stands in for a gap between
// Decode and the schema: the poison search convicts the record, and the
// batch commits without it), alone or in a batch, and on each bug a
// trigger stands in for: a refused record that changes a lock (of the
// valid commands' namespace too), stores an outcome (its copy sent again
// would be answered from it, not judged again), writes a lifecycle event,
// is answered without a valid token or on another topic than its own, or
// is not dead-lettered; an accepted one that writes an owner not scoped by
// its requester, or a namespace its token does not allow, or is answered
// on another topic than its own. What admit must refuse (a record without
// one valid token, naming another's reply topic or a namespace its token
// does not allow, a revoke without the admin claim) is judged from the
// record and its token: admit cannot be made to get it wrong here, so the
// judgement is checked instead. The same input without the bug passes: the
// input after a failure is judged on its own, as the minimiser's
// candidates, run in the same process, must be.
func TestFuzzApplyRecordChecks(t *testing.T) {
	ctx := context.Background()
	h := newRecordFuzz(t)
	_, err := h.st.Pool.Exec(ctx, `ALTER TABLE locks ADD CONSTRAINT test_no_poison CHECK (lock_name NOT LIKE 'poison%')`)
	require.NoError(t, err)
	cmd := func(c topics.Command) []byte {
		c.OwnerID, c.ReplyTo = "o", "locks.replies.f"
		return command(t, c)
	}
	acquire := func(lock string, batch bool) fuzzRecord {
		return fuzzRecord{key: []byte(lock), batch: batch, value: cmd(topics.Command{Operation: topics.OpAcquire, LockName: lock})}
	}
	for _, batch := range []bool{false, true} {
		msg := failureOf(t, func(tb testing.TB) { h.run(tb, acquire("poison", batch)) })
		require.Contains(t, msg, "convicted by the poison search", "in a batch: %v", batch)
		h.run(t, acquire("a", batch))
	}

	const onCopy = `AFTER INSERT ON outbox FOR EACH ROW WHEN (NEW.topic = 'locks.commands.dlq')`
	notJSON := fuzzRecord{key: []byte("a"), value: []byte("{")}
	bearer := func(token string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(token)}}
	}

	// What admit would wrongly accept is judged from the record and its
	// token alone (run requires an accepted record's mustRefuse empty).
	h.w.cfg.Auth = h.verifier
	for _, c := range []struct {
		name string
		c    topics.Command
		hs   []kgo.RecordHeader
		want string
	}{
		{"no token", topics.Command{Operation: topics.OpAcquire, LockName: "a"}, nil, "carries no valid token"},
		{"two tokens", topics.Command{Operation: topics.OpAcquire, LockName: "a"},
			append(bearer(h.token("f")), bearer(h.token("f"))...), "carries no valid token"},
		{"a token that does not verify", topics.Command{Operation: topics.OpAcquire, LockName: "a"},
			bearer("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJmIn0."), "carries no valid token"},
		{"another's reply topic", topics.Command{Operation: topics.OpAcquire, LockName: "a", ReplyTo: "locks.replies.other"},
			bearer(h.token("f")), "not its requester"},
		{"a namespace not allowed", topics.Command{Operation: topics.OpAcquire, Namespace: "other", LockName: "a"},
			bearer(h.token("f", "ns")), "which its token does not allow"},
		{"a revoke without admin", topics.Command{Operation: topics.OpRevoke, LockName: "a", Reason: "r"},
			bearer(h.token("f")), "no admin claim"},
		{"an admin's revoke", topics.Command{Operation: topics.OpRevoke, LockName: "a", Reason: "r"},
			bearer(authWorkerToken(t, "f", true)), ""},
		{"an acquire", topics.Command{Operation: topics.OpAcquire, LockName: "a"}, bearer(h.token("f")), ""},
	} {
		v := c.c
		v.OwnerID = "o"
		if v.ReplyTo == "" {
			v.ReplyTo = "locks.replies.f"
		}
		got := h.judge(t, ctx, &kgo.Record{Topic: topics.DefaultNames().Commands, Key: []byte("a"), Value: command(t, v), Headers: c.hs})
		if c.want == "" {
			require.Empty(t, got.mustRefuse, c.name)
		} else {
			require.Contains(t, got.mustRefuse, c.want, c.name)
		}
	}
	for _, bug := range []struct {
		name, when, body string // the trigger's
		in               fuzzRecord
		want             string
	}{
		{"a refused record changes a lock", onCopy,
			`UPDATE locks SET updated_at = clock_timestamp() WHERE lock_name = 'a'; RETURN NULL;`, notJSON, "changed the rows"},
		{"a refused record changes a lock of the valid commands' namespace", onCopy,
			`UPDATE locks SET updated_at = clock_timestamp() WHERE namespace = 'fuzz-good'; RETURN NULL;`,
			fuzzRecord{key: []byte("a"), value: []byte("{"), batch: true}, "changed the rows"},
		{"a refused record stores an outcome", onCopy,
			`INSERT INTO processed_requests (request_id, outcome) VALUES ('stored-' || NEW.id, '\x7b7d'); RETURN NULL;`, notJSON, "changed the rows"},
		{"a refused record writes a lifecycle event", onCopy,
			`INSERT INTO outbox (source_partition, topic, key, value) VALUES (NEW.source_partition, 'locks.lock.released.v1', NEW.key, '\x7b7d'); RETURN NULL;`,
			notJSON, "where it may not be"},
		{"a record without a token is answered", onCopy,
			`INSERT INTO outbox (source_partition, topic, key, value) VALUES (NEW.source_partition, 'locks.replies.f', NEW.key, '\x7b7d'); RETURN NULL;`,
			fuzzRecord{key: []byte("a"), auth: true, value: cmd(topics.Command{Operation: topics.OpAcquire, LockName: "a"})}, "where it may not be"},
		{"a refused record is answered on another requester's topic",
			`BEFORE INSERT ON outbox FOR EACH ROW WHEN (NEW.topic = 'locks.replies.f')`, `NEW.topic := 'locks.replies.other'; RETURN NEW;`,
			fuzzRecord{key: []byte("a"), auth: true, headers: bearer(h.token("f")),
				value: cmd(topics.Command{Operation: topics.OpRevoke, LockName: "a", Reason: "r"})}, "on a topic it may not be"},
		{"an accepted record is answered on another requester's topic",
			`BEFORE INSERT ON outbox FOR EACH ROW WHEN (NEW.topic = 'locks.replies.f')`, `NEW.topic := 'locks.replies.other'; RETURN NEW;`,
			fuzzRecord{key: []byte("told"), auth: true, headers: bearer(h.token("f")),
				value: cmd(topics.Command{Operation: topics.OpAcquire, LockName: "told"})}, "neither its own reply topic"},
		{"an accepted record is answered on another topic without authentication",
			`BEFORE INSERT ON outbox FOR EACH ROW WHEN (NEW.topic = 'locks.replies.f')`, `NEW.topic := 'locks.replies.other'; RETURN NEW;`,
			fuzzRecord{key: []byte("told"), value: cmd(topics.Command{Operation: topics.OpQuery, LockName: "told"})}, "neither its own reply topic"},
		{"a refused record is not dead-lettered", `BEFORE INSERT ON outbox FOR EACH ROW WHEN (NEW.topic = 'locks.commands.dlq')`,
			`RETURN NULL;`, notJSON, "one dead-letter copy"},
		{"an owner not scoped", `BEFORE INSERT ON lock_holders FOR EACH ROW WHEN (NEW.lock_name = 'unscoped')`,
			`NEW.owner_id := 'o'; RETURN NEW;`,
			fuzzRecord{key: []byte("unscoped"), auth: true, headers: bearer(h.token("f")),
				value: cmd(topics.Command{Operation: topics.OpAcquire, LockName: "unscoped"})}, "an owner not scoped"},
		{"a namespace the token does not allow", `AFTER INSERT ON locks FOR EACH ROW WHEN (NEW.namespace = 'ns')`,
			`INSERT INTO locks (namespace, lock_name, status, source_partition) VALUES ('elsewhere', NEW.lock_name, 'released', NEW.source_partition); RETURN NULL;`,
			fuzzRecord{key: []byte("ns/a"), auth: true, headers: bearer(h.token("f", "ns")),
				value: cmd(topics.Command{Operation: topics.OpAcquire, Namespace: "ns", LockName: "a"})}, "a namespace its token does not allow"},
	} {
		table := strings.Fields(bug.when)[3] // <timing> <event> ON <table> ...
		_, err := h.st.Pool.Exec(ctx, `CREATE FUNCTION test_bug() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN `+bug.body+` END $$;
			CREATE TRIGGER test_bug `+bug.when+` EXECUTE FUNCTION test_bug()`)
		require.NoError(t, err, bug.name)
		msg := failureOf(t, func(tb testing.TB) { h.run(tb, bug.in) })
		require.Contains(t, msg, bug.want, bug.name)
		_, err = h.st.Pool.Exec(ctx, `DROP TRIGGER test_bug ON `+table+`; DROP FUNCTION test_bug()`)
		require.NoError(t, err, bug.name)
		h.run(t, bug.in)
	}
}

// failureOf is what fn failed with as a test ("" if it passed), without
// failing t: fn's goroutine ends at its first fatal failure, as a test's
// would.
func failureOf(t *testing.T, fn func(testing.TB)) string {
	r := &failRecorder{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); fn(r) }()
	<-done
	return r.msg
}

// failRecorder is a testing.TB that keeps its failures instead of
// reporting them.
type failRecorder struct {
	testing.TB
	msg string
}

func (r *failRecorder) Errorf(format string, args ...any) { r.msg += fmt.Sprintf(format, args...) }
func (r *failRecorder) FailNow()                          { runtime.Goexit() }

// A stored outcome damaged in the database (lockworker writes none it cannot
// read back) does not stop its partition: a copy of its request is refused
// REQUEST_ID_CONFLICT and the batch, with the command after it, commits,
// where it used to fail on every retry until the outcome was pruned.
func TestUnreadableOutcomeRefused(t *testing.T) {
	for _, damage := range []struct{ name, sql string }{
		{"compact form cut", `UPDATE processed_requests SET outcome = substr(outcome, 1, 5)`},
		{"plain form not JSON", `UPDATE processed_requests SET outcome = '{"event_id": '::bytea`},
	} {
		t.Run(damage.name, func(t *testing.T) {
			w, st := newApplier(t)
			p := w.newPartition(w.hard, 3)
			reply := "locks.replies.damaged"
			rec := func(off int64, id, lock string) *kgo.Record {
				return &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 3, Offset: off, Key: []byte(lock),
					Value: command(t, topics.Command{RequestID: id, Operation: topics.OpAcquire, LockName: lock, OwnerID: "o", ReplyTo: reply})}
			}
			apply(w, segment{p: p, records: []*kgo.Record{rec(0, "first", "x")}, polledAt: time.Now()})
			_, err := st.Pool.Exec(context.Background(), damage.sql)
			require.NoError(t, err)

			done := make(chan struct{})
			go func() {
				defer close(done)
				apply(w, segment{p: p, records: []*kgo.Record{rec(1, "first", "x"), rec(2, "next", "y")}, polledAt: time.Now()})
			}()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("the batch with the damaged outcome's request did not commit")
			}
			require.EqualValues(t, 3, storedOffset(t, st, 3))
			require.EqualValues(t, 1, acquisitions(t, st, "x"), "the copy applied nothing")
			require.EqualValues(t, 1, acquisitions(t, st, "y"), "the command after it applied")
			var answers []topics.Event
			for _, r := range outboxRows(t, st, reply, 0) {
				ev, err := topics.DecodeEvent(r.value)
				require.NoError(t, err)
				answers = append(answers, ev)
			}
			require.Len(t, answers, 3)
			require.Equal(t, "first", answers[1].RequestID)
			require.Equal(t, topics.TypeRejected, answers[1].Type)
			require.Equal(t, topics.CodeRequestIDConflict, answers[1].ErrorCode)
			require.Contains(t, answers[1].ErrorMessage, "cannot be read back")
			require.Equal(t, topics.TypeAcquired, answers[2].Type)
		})
	}
}

// A batch PostgreSQL refused once, but whose refusal does not reproduce
// (here a trigger that refuses only the first time; in production, a row
// another transaction wrote or removed meanwhile), has no culprit: the
// search's probe of the whole batch succeeds. The batch is retried at once
// and applies, without quarantining a command, an error log or a backoff.
func TestRefusalThatDoesNotReproduceRetriesAtOnce(t *testing.T) {
	w, st := newApplier(t)
	logs := &testlog.Buffer{}
	w.log = zerolog.New(logs)
	refusals := refuseFirst(t, st, "locks", "true", 1)

	p := w.newPartition(w.hard, 0)
	apply(w, seg(t, p, 0, "a"))
	require.GreaterOrEqual(t, refusals(), int64(2), "refused once, then probed")
	require.EqualValues(t, 1, storedOffset(t, st, 0))
	require.EqualValues(t, 1, acquisitions(t, st, "a"), "applied, not quarantined")
	require.Empty(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), "nothing dead-lettered")
	require.NotContains(t, logs.String(), `"level":"error"`, "a refusal that did not reproduce is no failure")
	require.NotContains(t, logs.String(), "applying batch failed")
}

// A refusal that comes and goes while the batch is searched (here a trigger
// that refuses the first two lock rows it sees: the batch's, then the
// search's first probe's) once pointed the search at an innocent record,
// which was answered INVALID_REQUEST and dead-lettered on that one probe.
// The culprit is now probed again on both sides before it is convicted:
// the refusal does not reproduce, and every command of the batch applies.
func TestRefusalThatComesAndGoesConvictsNothing(t *testing.T) {
	w, st := newApplier(t)
	refuseFirst(t, st, "locks", "true", 2)

	p := w.newPartition(w.hard, 0)
	apply(w, seg(t, p, 0, "a", "b", "c", "d"))
	require.EqualValues(t, 4, storedOffset(t, st, 0))
	for _, lock := range []string{"a", "b", "c", "d"} {
		require.EqualValues(t, 1, acquisitions(t, st, lock), lock)
	}
	require.Empty(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), "nothing dead-lettered")
}

// Many refused commands in one batch are each found close behind the one
// before, the batch not searched from its start again for each: every
// good command applies once, every refused one is answered INVALID_REQUEST
// and dead-lettered, and the transactions the search takes (counted by a
// trigger on the offset row each of them moves) stay well below a search
// of the whole batch and a failed attempt per refused command (which took
// 65 and 68).
func TestManyRefusedCommandsInABatchAreFoundInAFewProbesEach(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  func(i int) bool
		max  int64
	}{
		{"spread", func(i int) bool { return i%5 == 2 }, 60},         // 54 now
		{"a run", func(i int) bool { return i >= 16 && i < 24 }, 48}, // 39 now
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			w, st := newApplier(t)
			countTransactions(t, st, "")
			reply := "locks.replies.many"
			var recs []*kgo.Record
			var good, bad []string
			for i := range 40 {
				lock := "good-" + strconv.Itoa(i)
				if tc.bad(i) {
					lock = "poison-" + strconv.Itoa(i)
					bad = append(bad, lock)
				} else {
					good = append(good, lock)
				}
				recs = append(recs, &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: int64(i), Key: []byte(lock),
					Value: command(t, topics.Command{RequestID: "m-" + lock, Operation: topics.OpAcquire, LockName: lock, OwnerID: "o", ReplyTo: reply})})
			}
			require.Len(t, bad, 8)
			apply(w, segment{p: w.newPartition(w.hard, 0), records: recs, polledAt: time.Now()})

			require.EqualValues(t, 40, storedOffset(t, st, 0))
			for _, lock := range good {
				require.EqualValues(t, 1, acquisitions(t, st, lock), lock)
			}
			answers := answersOn(t, st, reply)
			for _, lock := range bad {
				ev := answers["m-"+lock]
				require.Equal(t, topics.TypeRejected, ev.Type, lock)
				require.Equal(t, topics.CodeInvalidRequest, ev.ErrorCode, lock)
			}
			require.Len(t, outboxRows(t, st, topics.DefaultNames().DeadLetter, 0), len(bad))
			var n int64
			require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM transactions`).Scan(&n))
			t.Logf("%d transactions", n)
			require.LessOrEqual(t, n, tc.max)
			// Each conviction takes its two verifying probes, and the
			// batch its failed attempt and its commit: the trigger counts.
			require.GreaterOrEqual(t, n, int64(2+2*len(bad)))
		})
	}
}

// countTransactions refuses lock names starting "poison" (a CHECK
// PostgreSQL enforces and validation does not know) and counts the
// transactions that advance the offset of a partition, in the sequence
// transactions, which a rolled-back probe does not undo; then runs also,
// with the count in last.
func countTransactions(t *testing.T, st *store.Store, then string) {
	t.Helper()
	_, err := st.Pool.Exec(context.Background(), `
		ALTER TABLE locks ADD CONSTRAINT test_no_poison CHECK (lock_name NOT LIKE 'poison%');
		CREATE SEQUENCE transactions;
		CREATE FUNCTION count_transaction() RETURNS trigger LANGUAGE plpgsql AS $$
		DECLARE last int8 := nextval('transactions');
		BEGIN
			`+then+`
			RETURN NEW;
		END $$;
		CREATE TRIGGER count_transaction BEFORE UPDATE ON consumer_offsets FOR EACH ROW EXECUTE FUNCTION count_transaction()`)
	require.NoError(t, err)
}

// refuseFirst makes PostgreSQL refuse (check_violation) the first n rows
// inserted into table for which when (SQL on NEW) holds, as a constraint
// that comes and goes would: refused counts those seen so far, refused or
// not (a rolled-back probe's too).
func refuseFirst(t *testing.T, st *store.Store, table, when string, n int) (refused func() int64) {
	t.Helper()
	ctx := context.Background()
	_, err := st.Pool.Exec(ctx, fmt.Sprintf(`
		CREATE SEQUENCE refusals;
		CREATE FUNCTION refuse_first() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF %s AND nextval('refusals') <= %d THEN
				RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation';
			END IF;
			RETURN NEW;
		END $$;
		CREATE TRIGGER refuse_first BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION refuse_first()`, when, n, table))
	require.NoError(t, err)
	return func() (n int64) {
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals`).Scan(&n))
		return n
	}
}

// answersOn are the events written for topic reply (partition 0), by
// request_id.
func answersOn(t *testing.T, st *store.Store, reply string) map[string]topics.Event {
	t.Helper()
	answers := map[string]topics.Event{}
	for _, r := range outboxRows(t, st, reply, 0) {
		var ev topics.Event
		require.NoError(t, json.Unmarshal(r.value, &ev))
		answers[ev.RequestID] = ev
	}
	return answers
}

// TestRevokeEndsThePoisonSearch: a partition revoked while its batch's
// refused command is being searched for is let go at the next probe, not
// at the end of the search: a revoke, and the group's rebalance, wait for
// the batch's segments.
func TestRevokeEndsThePoisonSearch(t *testing.T) {
	ctx := context.Background()
	w, st := newApplier(t)
	// From the third transaction on (probes: the batch's attempt is the
	// first), each waits for an advisory lock the test holds (a retry of
	// one whose wait timed out too).
	countTransactions(t, st, `IF last >= 3 THEN PERFORM pg_advisory_xact_lock(4242); END IF;`)
	holder, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer holder.Release()
	_, err = holder.Exec(ctx, `SELECT pg_advisory_lock(4242)`)
	require.NoError(t, err)
	defer holder.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock_all()`) //nolint:errcheck // a failed test's cleanup

	var locks []string
	for i := range 40 {
		lock := "good-" + strconv.Itoa(i)
		if i%5 == 2 {
			lock = "poison-" + strconv.Itoa(i)
		}
		locks = append(locks, lock)
	}
	p := w.newPartition(w.hard, 0)
	done := make(chan struct{})
	go func() { defer close(done); apply(w, seg(t, p, 0, locks...)) }()
	require.Eventually(t, func() bool {
		var waiting int
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting))
		return waiting == 1
	}, 30*time.Second, 10*time.Millisecond, "a probe waits for the advisory lock")
	p.revoke()
	var atRevoke int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM transactions`).Scan(&atRevoke))
	_, err = holder.Exec(ctx, `SELECT pg_advisory_unlock(4242)`)
	require.NoError(t, err)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the batch was not let go")
	}
	var n int64
	require.NoError(t, st.Pool.QueryRow(ctx, `SELECT last_value FROM transactions`).Scan(&n))
	// The probe under way may be retried once (its lock wait timed out
	// before the release); no other starts. Without the check: about 50.
	require.LessOrEqual(t, n, atRevoke+1, "no probe after the revoke")
	require.NotEqualValues(t, 40, storedOffset(t, st, 0), "the revoked partition's records were dropped, not applied")
}
