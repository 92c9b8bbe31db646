package worker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

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
	rows, err := st.Pool.Query(context.Background(), `SELECT id, topic, key, value, headers, value IS NULL FROM outbox WHERE topic = $1 AND id > $2 ORDER BY id`, topic, after)
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

// A record of a million empty headers (a producer can send one in an
// uncompressed batch of 2 MB, and one of about 400,000 within the
// decompressor's bounds in a compressed batch) is copied to the
// dead-letter topic within the copy's bound: each header costs the lengths
// its row stores, not only its key and value (nothing, for an empty one),
// so its headers are cut at a quarter of the bound and the copy says so,
// where all of them went into one row of 8 MB.
func TestDeadLetterCopyOfManyEmptyHeadersKeepsItsBound(t *testing.T) {
	w, st := newApplier(t)
	p := w.newPartition(w.hard, 0)
	const million = 1 << 20
	r := &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: 0, Offset: 0, Key: []byte("k"), Value: []byte("not a command"),
		Headers: make([]kgo.RecordHeader, million)}
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
	own := 0
	for _, h := range c.headers {
		if h.Key == "" {
			own++
		}
	}
	require.Equal(t, DefaultDeadLetterMaxBytes/4/deadLetterPerHeader, own,
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

// FuzzApplyRecord drives any record (key, value, headers) through the
// worker's applier into a real PostgreSQL transaction: the transaction
// commits, the partition's offset moves past the record, and a dead-letter
// copy stays within its bound. `go test` runs the seeds; `go test -fuzz
// FuzzApplyRecord ./worker` explores.
func FuzzApplyRecord(f *testing.F) {
	valid := func(c topics.Command) []byte { return command(f, c) }
	seeds := []struct {
		key, value       []byte
		nilKey, nilValue bool
		headerKey        string
		headerValue      []byte
		repeatValue      int
	}{
		{key: []byte("k"), nilValue: true},
		{nilKey: true, nilValue: true},
		{key: []byte{}, value: []byte{}},
		{key: []byte("x"), value: []byte("x"), repeatValue: 1_000_000},
		{key: []byte{0xff}, value: []byte{0xfe, 0, 0xff}, headerKey: "error", headerValue: []byte{0}},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"})},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpRelease, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"})},
		{key: []byte("a"), value: []byte(`{"operation":"acquire","lock_name":"a","owner_id":"o","owner_metadata":{"k":"\u0000"}}`)},
		{key: []byte("a"), value: []byte(`{"operation":"cleanup","lock_name":"*","max_age_seconds":0}`)},
		{key: []byte("a"), value: []byte(`{"v":2,"operation":"steal"}`), headerKey: "", headerValue: nil},
		{key: []byte("a"), value: []byte(`{"operation":"acquire","lock_name":"` + strings.Repeat("é", 200) + `","owner_id":"o"}`)},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"}),
			headerKey: topics.HeaderAuthorization, headerValue: []byte("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJmIn0.")},
		{key: []byte("a"), value: valid(topics.Command{Operation: topics.OpQuery, LockName: "a", ReplyTo: "locks.replies.f"}),
			headerKey: "Authorization", headerValue: bytes.Repeat([]byte("A"), 10_000)},
	}
	for _, s := range seeds {
		v := s.value
		if s.repeatValue > 0 {
			v = bytes.Repeat(v, s.repeatValue)
		}
		f.Add(s.key, v, s.nilKey, s.nilValue, s.headerKey, s.headerValue)
	}
	w, st, token := authWorker(f)
	verifier := w.cfg.Auth
	f.Add([]byte("a"), valid(topics.Command{Operation: topics.OpAcquire, LockName: "a", OwnerID: "o", ReplyTo: "locks.replies.f"}),
		false, false, topics.HeaderAuthorization, []byte(token("f")))
	p := w.newPartition(w.hard, 0)
	var next, lastOutbox int64
	topic, dlq := topics.DefaultNames().Commands, topics.DefaultNames().DeadLetter
	f.Fuzz(func(t *testing.T, key, value []byte, nilKey, nilValue bool, headerKey string, headerValue []byte) {
		// Authentication on for inputs with a header, off for the rest:
		// both admission paths see every kind of record.
		w.cfg.Auth = nil
		if headerKey != "" {
			w.cfg.Auth = verifier
		}
		if nilKey {
			key = nil
		}
		if nilValue {
			value = nil
		}
		r := &kgo.Record{Topic: topic, Partition: 0, Offset: next, Key: key, Value: value}
		if headerKey != "" || headerValue != nil {
			r.Headers = []kgo.RecordHeader{{Key: headerKey, Value: headerValue}}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		p.pending.Add(1)
		w.applySegments(ctx, []segment{{p: p, records: []*kgo.Record{r}, polledAt: time.Now()}})
		require.NoError(t, ctx.Err(), "the record was applied or refused within 30 s")
		next++
		require.Equal(t, next, p.expected, "the partition moved past the record")
		require.Equal(t, next, storedOffset(t, st, 0))
		for _, c := range outboxRows(t, st, dlq, lastOutbox) {
			require.LessOrEqual(t, c.size(), DefaultDeadLetterMaxBytes+deadLetterHeaderBytes)
			for _, h := range c.headers {
				if strings.EqualFold(h.Key, topics.HeaderAuthorization) {
					require.Equal(t, topics.RedactedToken, string(h.Value), "no token reaches the dead-letter topic")
				}
			}
		}
		require.NoError(t, st.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox`).Scan(&lastOutbox))
	})
}

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
