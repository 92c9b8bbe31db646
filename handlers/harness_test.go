package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// harness applies commands to a fresh schema and reads back what they wrote.
type harness struct {
	t   *testing.T
	st  *store.Store
	env handlers.Env
	seq int
}

func newHarness(t *testing.T) *harness {
	t.Parallel()
	// No lock_timeout: the tests hold rows on purpose, and a wait it cut
	// would be retried with a time read after the row was let go, not the
	// one the test means (waitingPast).
	return &harness{t: t, st: testdb.NewWith(t, store.Config{LockTimeout: -1}), env: handlers.Env{
		Names: topics.DefaultNames(), DefaultLease: 30 * time.Second, Source: "lockworker/test",
	}}
}

// apply applies the commands in one transaction and returns every event caused.
func (h *harness) apply(cmds ...topics.Command) []topics.Event {
	h.t.Helper()
	return h.run(true, cmds)
}

// applyInline is apply without sending the common cases ahead.
func (h *harness) applyInline(cmds ...topics.Command) []topics.Event {
	h.t.Helper()
	return h.run(false, cmds)
}

// run applies cmds in one transaction as the worker does (applyTx).
func (h *harness) run(ahead bool, cmds []topics.Command) []topics.Event {
	h.t.Helper()
	out, err := h.applyTx(context.Background(), ahead, cmds)
	require.NoError(h.t, err)
	return out
}

// applyTx applies cmds in one transaction as the worker does: with ahead,
// the stored outcomes (QueuePrefetch) and the common cases (QueueAtOnce)
// go first in one round trip. It asserts
// nothing itself, so any goroutine may call it.
func (h *harness) applyTx(ctx context.Context, ahead bool, cmds []topics.Command) ([]topics.Event, error) {
	var out []topics.Event
	err := h.st.InTx(ctx, func(tx pgx.Tx) error {
		out = nil
		b := handlers.NewBatch(tx, h.env)
		if ahead {
			pb := &pgx.Batch{}
			ids := make([]string, 0, len(cmds))
			for _, c := range cmds {
				ids = append(ids, c.RequestID)
			}
			b.QueuePrefetch(pb, ids)
			b.QueueAtOnce(pb, cmds, nil)
			if err := tx.SendBatch(ctx, pb).Close(); err != nil {
				return err
			}
		}
		for _, c := range cmds {
			evs, err := b.Apply(ctx, c, time.Now())
			if err != nil {
				return err
			}
			out = append(out, evs...)
		}
		if err := b.Flush(ctx); err != nil {
			return err
		}
		return storedHeaders(tx, b.Written())
	})
	return out, err
}

// applyAcross applies cmds in one transaction, each for its commands
// partition (partitions[i]), the first ahead of them sent ahead
// (QueueAtOnce) as the worker does, the rest left to the general path.
func (h *harness) applyAcross(ctx context.Context, cmds []topics.Command, partitions []int32, ahead int) error {
	return h.st.InTx(ctx, func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, h.env)
		pb := &pgx.Batch{}
		b.QueueAtOnce(pb, cmds[:ahead], partitions[:ahead])
		if err := tx.SendBatch(ctx, pb).Close(); err != nil {
			return err
		}
		for i, c := range cmds {
			if _, err := b.For(partitions[i]).Apply(ctx, c, time.Now()); err != nil {
				return err
			}
		}
		return b.Flush(ctx)
	})
}

// storedHeaders checks that the outbox rows written, read back from the
// table (as the relay reads them after a crash), are the records the relay
// was handed in memory: an event's row stores the event compacted and only
// its source as headers (topics.EncodeEventHeaders). All in one statement:
// a row each made a test's large batch (a session of 10,000 leases, 30,001
// rows) twice as long as the batch.
func storedHeaders(tx pgx.Tx, written []outbox.Row) error {
	ids := make([]int64, len(written))
	for i, w := range written {
		ids[i] = w.ID
	}
	type readBack struct{ headers, value []byte }
	rows := make(map[int64]readBack, len(written))
	var id int64
	var r readBack
	res, err := tx.Query(context.Background(), `SELECT id, headers, value FROM outbox WHERE id = ANY($1)`, ids)
	if err != nil {
		return err
	}
	if _, err := pgx.ForEachRow(res, []any{&id, &r.headers, &r.value}, func() error { rows[id] = r; return nil }); err != nil {
		return err
	}
	for _, w := range written {
		row, ok := rows[w.ID]
		if !ok {
			return fmt.Errorf("row %d (%s): not in the outbox", w.ID, w.Topic)
		}
		v, stored, err := topics.DecodeOutboxRow(row.value, row.headers)
		if err != nil {
			return fmt.Errorf("row %d (%s): %w", w.ID, w.Topic, err)
		}
		handed, err := topics.DecodeHeaders(w.Headers)
		if err != nil {
			return err
		}
		if !slices.EqualFunc(handed, stored, func(a, b topics.Header) bool { return a.Key == b.Key && bytes.Equal(a.Value, b.Value) }) {
			return fmt.Errorf("row %d (%s): headers read back %q, handed to the relay %q", w.ID, w.Topic, stored, handed)
		}
		if !bytes.Equal(v, w.Value) {
			return fmt.Errorf("row %d (%s): value read back %q, handed to the relay %q", w.ID, w.Topic, v, w.Value)
		}
	}
	return nil
}

// one applies one command and returns its own answer: the first event whose
// request_id is the command's.
func (h *harness) one(c topics.Command) topics.Event {
	h.t.Helper()
	for _, ev := range h.apply(c) {
		if ev.RequestID == c.RequestID {
			return ev
		}
	}
	h.t.Fatalf("no answer to %+v", c)
	return topics.Event{}
}

// applyAside applies c in a transaction of its own in the background (for
// a command that waits for another transaction's lock); answer waits for
// its own answer.
func (h *harness) applyAside(c topics.Command) (answer func() topics.Event) {
	type result struct {
		ev  topics.Event
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		var evs []topics.Event
		evs, r.err = h.applyTx(h.t.Context(), false, []topics.Command{c})
		for _, ev := range evs {
			if ev.RequestID == c.RequestID {
				r.ev = ev
			}
		}
		done <- r
	}()
	return func() topics.Event {
		h.t.Helper()
		select {
		case r := <-done:
			require.NoError(h.t, r.err)
			require.Equal(h.t, c.RequestID, r.ev.RequestID, "no answer to %s", c.Operation)
			return r.ev
		case <-time.After(30 * time.Second):
			h.t.Fatalf("%s not applied in 30 s", c.Operation)
			return topics.Event{}
		}
	}
}

// waitBlockedBy waits until a transaction waits for a lock that the
// backend pid holds.
// blocker is a connection in a transaction of its own, to hold locks other
// transactions then wait for, and its backend's pid (see waitBlockedBy).
func (h *harness) blocker() (*pgxpool.Conn, int64) {
	h.t.Helper()
	ctx := context.Background()
	c, err := h.st.Pool.Acquire(ctx)
	require.NoError(h.t, err)
	h.t.Cleanup(c.Release)
	var pid int64
	require.NoError(h.t, c.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&pid))
	_, err = c.Exec(ctx, `BEGIN`)
	require.NoError(h.t, err)
	return c, pid
}

func (h *harness) waitBlockedBy(pid int64) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		return h.scalar(`SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))`, pid) > 0
	}, 10*time.Second, 5*time.Millisecond, "nothing waits for backend %d", pid)
}

func (h *harness) id() string { h.seq++; return fmt.Sprintf("req-%d", h.seq) }

func (h *harness) acquire(lock, owner string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: h.id(), Operation: topics.OpAcquire, LockName: lock, OwnerID: owner, ReplyTo: "locks.replies." + owner}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func (h *harness) release(lock, owner string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: h.id(), Operation: topics.OpRelease, LockName: lock, OwnerID: owner, ReplyTo: "locks.replies." + owner}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func (h *harness) extend(lock, owner string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: h.id(), Operation: topics.OpExtend, LockName: lock, OwnerID: owner, ReplyTo: "locks.replies." + owner}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func (h *harness) query(lock string) topics.Command {
	return topics.Command{RequestID: h.id(), Operation: topics.OpQuery, LockName: lock, ReplyTo: "locks.replies.q"}
}

func lease(s float64) func(*topics.Command) { return func(c *topics.Command) { c.LeaseDuration = s } }
func wait(s float64) func(*topics.Command)  { return func(c *topics.Command) { c.WaitTimeout = s } }
func token(t int64) func(*topics.Command)   { return func(c *topics.Command) { c.FencingToken = &t } }
func ns(n string) func(*topics.Command)     { return func(c *topics.Command) { c.Namespace = n } }
func extendBy(s float64) func(*topics.Command) {
	return func(c *topics.Command) { c.ExtensionDuration = s }
}

// record is one outbox row.
type record struct {
	Topic, Key string
	Event      topics.Event
	Headers    map[string]string
}

// outbox returns the outbox rows of events in id order (the lock state
// topic's rows are states').
func (h *harness) outbox() []record {
	h.t.Helper()
	var out []record
	for _, r := range h.rows(`topic <> $1`) {
		var rec record
		require.NoError(h.t, json.Unmarshal(r.value, &rec.Event))
		rec.Topic, rec.Key, rec.Headers = r.topic, r.key, r.headers
		out = append(out, rec)
	}
	return out
}

// stateRecord is one outbox row of the lock state topic.
type stateRecord struct {
	Key   string
	State *topics.LockState // nil: a tombstone
}

// states returns the outbox rows of the lock state topic in id order.
func (h *harness) states() []stateRecord {
	h.t.Helper()
	var out []stateRecord
	for _, r := range h.rows(`topic = $1`) {
		rec := stateRecord{Key: r.key}
		if r.value != nil {
			st, err := topics.DecodeLockState(r.value)
			require.NoError(h.t, err)
			rec.State = &st
		}
		out = append(out, rec)
	}
	return out
}

type rawRow struct {
	topic, key string
	value      []byte
	headers    map[string]string
}

// rows reads the outbox rows where cond holds ($1 is the state topic).
func (h *harness) rows(cond string) []rawRow {
	h.t.Helper()
	rows, err := h.st.Pool.Query(context.Background(), `SELECT topic, key, value, headers FROM outbox WHERE `+cond+` ORDER BY id`,
		h.env.Names.State)
	require.NoError(h.t, err)
	var out []rawRow
	var r rawRow
	var key, raw []byte
	_, err = pgx.ForEachRow(rows, []any{&r.topic, &key, &r.value, &raw}, func() error {
		value, hdrs, err := topics.DecodeOutboxRow(r.value, raw)
		if err != nil {
			return err
		}
		r.value = value
		r.key, r.headers = string(key), map[string]string{}
		for _, x := range hdrs {
			r.headers[x.Key] = string(x.Value)
		}
		out = append(out, r)
		return nil
	})
	require.NoError(h.t, err)
	return out
}

// clearOutbox forgets what was written so far, so a test can look at one step.
func (h *harness) clearOutbox() {
	_, err := h.st.Pool.Exec(context.Background(), `DELETE FROM outbox`)
	require.NoError(h.t, err)
}

// routes lists "topic type" of each outbox row.
func (h *harness) routes() []string {
	var out []string
	for _, r := range h.outbox() {
		out = append(out, r.Topic+" "+r.Event.Type)
	}
	return out
}

// waitPast waits until the database's clock has passed t: leases end by
// database time, so tests wait for that event rather than sleep a guess.
func (h *harness) waitPast(t time.Time) {
	h.t.Helper()
	require.Eventually(h.t, func() bool {
		var past bool
		err := h.st.Pool.QueryRow(context.Background(), `SELECT clock_timestamp() > $1`, t).Scan(&past)
		return err == nil && past
	}, 10*time.Second, 5*time.Millisecond)
}

// endLeases ends the leases of lock_holders matching where now (all at
// this statement's time) and waits until the database's clock is past
// that: a test that needs a lease in force during its setup gives it room,
// then ends it, so a busy machine cannot outrun a short lease meanwhile.
func (h *harness) endLeases(where string, args ...any) time.Time {
	h.t.Helper()
	t := h.timeOf(`UPDATE lock_holders SET expires_at = statement_timestamp() WHERE `+where+` RETURNING expires_at`, args...)
	h.waitPast(t)
	return t
}

// endWaits ends the waits matched by where (a condition on lock_waiters)
// now, by the database's clock, and waits until that time has passed. A test
// queues with a long wait_timeout and ends it here, rather than queueing with
// a short one, which a slow machine may see end before the test's next step.
func (h *harness) endWaits(where string, args ...any) time.Time {
	h.t.Helper()
	t := h.timeOf(`UPDATE lock_waiters SET deadline = statement_timestamp() WHERE `+where+` RETURNING deadline`, args...)
	h.waitPast(t)
	return t
}

// expireDue runs the expiry step for partition 0 and returns how much it ended.
func (h *harness) expireDue() int {
	h.t.Helper()
	n, _ := h.expireDueEvents()
	return n
}

// expireDueEvents is expireDue, also returning the events it caused.
func (h *harness) expireDueEvents() (int, []topics.Event) {
	h.t.Helper()
	var n int
	var evs []topics.Event
	err := h.st.InTx(context.Background(), func(tx pgx.Tx) error {
		b := handlers.NewBatch(tx, h.env)
		var err error
		if n, evs, err = b.ExpireDue(context.Background()); err != nil {
			return err
		}
		return b.Flush(context.Background())
	})
	require.NoError(h.t, err)
	return n, evs
}

func (h *harness) scalar(sql string, args ...any) int64 {
	h.t.Helper()
	var v int64
	require.NoError(h.t, h.st.Pool.QueryRow(context.Background(), sql, args...).Scan(&v))
	return v
}

// fresh returns a harness on another fresh schema for the same test, without
// calling t.Parallel again (a test may call it only once).
func (h *harness) fresh() *harness {
	return &harness{t: h.t, st: testdb.New(h.t), env: h.env}
}

// timeOf reads one timestamp.
func (h *harness) timeOf(sql string, args ...any) time.Time {
	h.t.Helper()
	var v time.Time
	require.NoError(h.t, h.st.Pool.QueryRow(context.Background(), sql, args...).Scan(&v))
	return v.UTC()
}

// resend applies cmd again and checks it is answered with its stored
// outcome, the event want, to its reply_to only, and that nothing changed.
func (h *harness) resend(cmd topics.Command, want topics.Event) topics.Event {
	h.t.Helper()
	before := h.snapshot()
	h.clearOutbox()
	again := h.apply(cmd)
	require.Len(h.t, again, 1)
	require.Equal(h.t, want.EventID, again[0].EventID)
	require.Equal(h.t, want.Type, again[0].Type)
	require.Equal(h.t, []string{cmd.ReplyTo + " " + want.Type}, h.routes())
	require.Equal(h.t, before, h.snapshot())
	return again[0]
}

// snapshot returns the rows of the lock tables (and the stored outcomes) as
// JSON text, to show that something changed nothing.
func (h *harness) snapshot() string {
	h.t.Helper()
	var s string
	require.NoError(h.t, h.st.Pool.QueryRow(context.Background(), `SELECT json_build_object(
		'locks', (SELECT coalesce(json_agg(l ORDER BY namespace, lock_name), '[]') FROM locks l),
		'holders', (SELECT coalesce(json_agg(h ORDER BY fencing_token), '[]') FROM lock_holders h),
		'waiters', (SELECT coalesce(json_agg(w ORDER BY id), '[]') FROM lock_waiters w),
		'processed', (SELECT coalesce(json_agg(p ORDER BY request_id), '[]') FROM processed_requests p),
		'history', (SELECT count(*) FROM lock_events))::text`).Scan(&s))
	return s
}

// outcome returns the stored outcome of a request_id.
func (h *harness) outcome(requestID string) topics.Event {
	h.t.Helper()
	var raw []byte
	require.NoError(h.t, h.st.Pool.QueryRow(context.Background(), `SELECT outcome FROM processed_requests WHERE request_id = $1`, requestID).Scan(&raw))
	v, err := topics.ExpandEvent(raw)
	require.NoError(h.t, err)
	ev, err := topics.DecodeEvent(v)
	require.NoError(h.t, err)
	return ev
}

// history lists "type owner" of a lock's lock_events rows in order.
func (h *harness) history(lock string) []string {
	h.t.Helper()
	return h.texts(`SELECT type || ' ' || owner_id FROM lock_events WHERE lock_name = $1 ORDER BY occurred_at, id`, lock)
}

// texts returns the one text column of sql's rows.
func (h *harness) texts(sql string, args ...any) []string {
	h.t.Helper()
	rows, err := h.st.Pool.Query(context.Background(), sql, args...)
	require.NoError(h.t, err)
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(h.t, err)
	return out
}

// find returns the events of a type, in order.
func find(evs []topics.Event, typ string) []topics.Event {
	var out []topics.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func maxAge(s float64) func(*topics.Command) { return func(c *topics.Command) { c.MaxAgeSeconds = &s } }

func (h *harness) cleanup(lock string, mods ...func(*topics.Command)) topics.Command {
	c := topics.Command{RequestID: h.id(), Operation: topics.OpCleanup, LockName: lock, ReplyTo: "locks.replies.janitor"}
	for _, m := range mods {
		m(&c)
	}
	return c
}

func (h *harness) scalarText(sql string, args ...any) string {
	h.t.Helper()
	var v string
	require.NoError(h.t, h.st.Pool.QueryRow(context.Background(), sql, args...).Scan(&v))
	return v
}

// v1Locks is the locks rows as v1 had them, the holder fused into its
// lock's row (the lease that ended last when nobody holds it), for tests of
// v1 commands (one holder at most); its columns are named as in v1.
const v1Locks = `(SELECT l.namespace, l.lock_name, l.status, l.waiter_count, l.acquisition_count, l.source_partition, l.updated_at,
		coalesce(h.owner_id, l.ended_owner_id) AS owner_id, coalesce(h.fencing_token, l.ended_fencing_token) AS fencing_token,
		coalesce(h.expires_at, l.ended_expires_at) AS expires_at, coalesce(h.extension_count, l.ended_extension_count) AS extension_count,
		h.request_id AS holder_request_id, h.reply_to
	FROM locks l LEFT JOIN lock_holders h USING (namespace, lock_name)) locks`

// reset empties the lock tables (the token sequence goes on), so one schema
// can serve several cases in turn.
func (h *harness) reset() {
	h.t.Helper()
	_, err := h.st.Pool.Exec(context.Background(), `TRUNCATE lock_holders, lock_waiters, locks, lock_events, outbox, processed_requests, sessions`)
	require.NoError(h.t, err)
}

// refusalCase is one way a holder's command (release, extend) is refused.
type refusalCase struct {
	name string
	// setup prepares lock "a" and returns the command to send.
	setup  func(h *harness) topics.Command
	code   string
	status string
	owner  string // lock_info.owner_id of the answer
	// routes the command writes; nil: only the rejection to its sender.
	routes []string
	// stillHeldBy: the holder the row must still have afterwards ("": none).
	stillHeldBy string
}

// runRefusals runs each case on a reset harness: the command is answered
// lock.rejected with the case's code, lock status and owner, to the case's
// routes, and stored as its outcome; check then looks at what the command
// left, given the state before it (read by before).
func runRefusals[B any](t *testing.T, cases []refusalCase, before func(h *harness) B, check func(t *testing.T, h *harness, tc refusalCase, before B)) {
	h := newHarness(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.reset()
			cmd := tc.setup(h)
			h.clearOutbox()
			b := before(h)
			ev := h.one(cmd)
			require.Equal(t, topics.TypeRejected, ev.Type)
			require.False(t, ev.Success)
			require.Equal(t, tc.code, ev.ErrorCode)
			require.NotEmpty(t, ev.ErrorMessage)
			require.Equal(t, cmd.RequestID, ev.RequestID)
			require.Equal(t, "a", ev.LockInfo.LockName)
			require.Equal(t, tc.status, ev.LockInfo.Status)
			require.Equal(t, tc.owner, ev.LockInfo.OwnerID)
			routes := tc.routes
			if routes == nil {
				routes = []string{cmd.ReplyTo + " lock.rejected"}
			}
			require.Equal(t, routes, h.routes())
			require.Equal(t, tc.code, h.outcome(cmd.RequestID).ErrorCode)
			if tc.stillHeldBy != "" {
				require.Equal(t, tc.stillHeldBy+" acquired", h.scalarText(`SELECT owner_id || ' ' || status FROM `+v1Locks+` WHERE lock_name = 'a'`))
			}
			check(t, h, tc, b)
		})
	}
}
