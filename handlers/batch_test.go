package handlers_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/handlers"
	"github.com/omninode/lockworker/topics"
)

// TestIdempotentAcrossTransactions: a request_id applied again, in a later
// transaction, changes nothing and re-sends the stored outcome (same
// event_id) to the duplicate's reply_to.
func TestIdempotentAcrossTransactions(t *testing.T) {
	h := newHarness(t)
	steps := []struct {
		name string
		cmd  topics.Command
		typ  string
	}{
		{"acquire granted", h.acquire("a", "alice", lease(30)), topics.TypeAcquired},
		{"acquire refused", h.acquire("a", "bob"), topics.TypeRejected},
		{"acquire queued", h.acquire("a", "carol", wait(60)), topics.TypeQueued},
		{"extend", h.extend("a", "alice"), topics.TypeExtended},
		{"query", h.query("a"), topics.TypeStatus},
		{"release", h.release("a", "alice"), topics.TypeReleased},
		{"release refused", h.release("a", "alice"), topics.TypeRejected},
		{"cleanup", h.cleanup(topics.CleanupAll), topics.TypeCleaned},
	}
	for _, s := range steps {
		first := h.one(s.cmd)
		require.Equal(t, s.typ, first.Type, s.name)
		before := h.snapshot()
		h.clearOutbox()

		again := h.apply(s.cmd)
		require.Len(t, again, 1, s.name)
		require.Equal(t, first.EventID, again[0].EventID, s.name)
		require.Equal(t, s.typ, again[0].Type, s.name)
		require.Equal(t, before, h.snapshot(), "%s: the duplicate changed something", s.name)
		out := h.outbox()
		require.Len(t, out, 1, "%s: only the reply is re-sent, no lifecycle event", s.name)
		require.Equal(t, s.cmd.ReplyTo, out[0].Topic)
		require.Equal(t, first.EventID, out[0].Event.EventID)
		require.Equal(t, first.EventID, out[0].Headers["ce_id"])
		require.Equal(t, s.cmd.RequestID, out[0].Headers["request_id"])

		// A copy from another reply_to (someone replaying the request_id)
		// is refused and learns nothing of the outcome; none, nothing.
		h.clearOutbox()
		moved := s.cmd
		moved.ReplyTo = "locks.replies.elsewhere"
		refused := h.apply(moved)
		require.Len(t, refused, 1, s.name)
		require.Equal(t, topics.CodeRequestIDConflict, refused[0].ErrorCode, s.name)
		require.NotEqual(t, first.EventID, refused[0].EventID)
		require.Nil(t, refused[0].LockInfo, "%s: the refusal shows no lock", s.name)
		require.Equal(t, []string{"locks.replies.elsewhere " + topics.TypeRejected}, h.routes())
		h.clearOutbox()
		moved.ReplyTo = ""
		require.Equal(t, topics.CodeRequestIDConflict, h.apply(moved)[0].ErrorCode)
		require.Empty(t, h.routes())
		require.Equal(t, before, h.snapshot())
	}
	// carol was granted by the release; her acquire's retry is its grant now.
	require.Equal(t, topics.TypeAcquired, h.apply(steps[2].cmd)[0].Type)
}

// TestIdempotentWithinOneBatch: the same request_id twice in one batch is
// applied once.
func TestIdempotentWithinOneBatch(t *testing.T) {
	h := newHarness(t)
	acq := h.acquire("a", "alice")
	rel := h.release("a", "alice")
	evs := h.apply(acq, acq, rel, rel, acq)
	require.Len(t, evs, 5)
	require.Equal(t, topics.TypeAcquired, evs[0].Type)
	require.Equal(t, evs[0].EventID, evs[1].EventID)
	require.Equal(t, evs[0].EventID, evs[4].EventID)
	require.Equal(t, topics.TypeReleased, evs[2].Type)
	require.Equal(t, evs[2].EventID, evs[3].EventID)
	require.Equal(t, []string{
		"locks.replies.alice lock.acquired", "locks.lock.acquired.v1 lock.acquired", "locks.replies.alice lock.acquired",
		"locks.replies.alice lock.released", "locks.lock.released.v1 lock.released", "locks.replies.alice lock.released",
		"locks.replies.alice lock.acquired",
	}, h.routes())
	out := h.outbox()
	require.Equal(t, string(mustEncode(t, out[0].Event)), string(mustEncode(t, out[2].Event)), "the very same record value")
	require.Equal(t, []string{"a alice released 0"}, h.lockStates(), "the last acquire was a duplicate, not a new grant")
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice"}, h.history("a"))
	require.Equal(t, int64(2), h.scalar(`SELECT count(*) FROM processed_requests`))
}

func mustEncode(t *testing.T, ev topics.Event) []byte {
	b, err := ev.Encode()
	require.NoError(t, err)
	return b
}

// TestIdempotentWithPrefetch: outcomes loaded by QueuePrefetch count as
// applied, and ids it found new are still remembered within the batch.
func TestIdempotentWithPrefetch(t *testing.T) {
	h := newHarness(t)
	acq := h.acquire("a", "alice")
	first := h.one(acq)
	fresh := h.acquire("b", "bob")
	var evs []topics.Event
	err := h.st.InTx(t.Context(), func(tx pgx.Tx) error {
		evs = nil
		b := handlers.NewBatch(tx, h.env)
		pb := &pgx.Batch{}
		b.QueuePrefetch(pb, []string{acq.RequestID, fresh.RequestID})
		if err := tx.SendBatch(t.Context(), pb).Close(); err != nil {
			return err
		}
		for _, c := range []topics.Command{acq, fresh, fresh} {
			e, err := b.Apply(t.Context(), c, time.Now())
			if err != nil {
				return err
			}
			evs = append(evs, e...)
		}
		return b.Flush(t.Context())
	})
	require.NoError(t, err)
	require.Len(t, evs, 3)
	require.Equal(t, first.EventID, evs[0].EventID)
	require.Equal(t, topics.TypeAcquired, evs[1].Type)
	require.Equal(t, evs[1].EventID, evs[2].EventID)
	require.Equal(t, int64(1), h.scalar(`SELECT acquisition_count FROM locks WHERE lock_name = 'b'`))
	require.Equal(t, int64(1), h.scalar(`SELECT acquisition_count FROM locks WHERE lock_name = 'a'`))
}

// TestIdempotentAcrossConcurrentTransactions: copies of one request_id
// applied by two transactions at once (copies on two partitions, owned by
// two replicas or appliers; "with any content, is not applied") take effect
// once: the second waits for the first's outcome row, fails when it
// commits, and its retry answers from the stored outcome.
func TestIdempotentAcrossConcurrentTransactions(t *testing.T) {
	h := newHarness(t)
	ctx := t.Context()
	first := h.acquire("a", "o")
	second := first
	second.LockName = "b" // the same request_id, with other content

	tx1, err := h.st.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx1.Rollback(context.WithoutCancel(ctx))
	b1 := handlers.NewBatch(tx1, h.env)
	evs, err := b1.Apply(ctx, first, time.Now())
	require.NoError(t, err)
	require.Equal(t, topics.TypeAcquired, evs[0].Type)
	require.NoError(t, b1.Flush(ctx)) // written, not committed

	pid := make(chan uint32, 1)
	done := make(chan []topics.Event, 1)
	go func() {
		var got []topics.Event
		err := h.st.InTx(ctx, func(tx pgx.Tx) error {
			select {
			case pid <- tx.Conn().PgConn().PID():
			default:
			}
			env := h.env
			env.Partition = 1
			b2 := handlers.NewBatch(tx, env)
			var err error
			if got, err = b2.Apply(ctx, second, time.Now()); err != nil {
				return err
			}
			return b2.Flush(ctx)
		})
		assert.NoError(t, err)
		done <- got
	}()
	waiting := <-pid
	require.Eventually(t, func() bool {
		return h.scalar(`SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock'`, waiting) == 1
	}, 10*time.Second, 5*time.Millisecond, "the second transaction waits for the first's outcome row")
	require.NoError(t, tx1.Commit(ctx))

	got := <-done
	require.Len(t, got, 1)
	require.Equal(t, evs[0].EventID, got[0].EventID, "the copy is answered with the stored outcome")
	require.Equal(t, []string{"a"}, h.texts(`SELECT lock_name FROM lock_holders ORDER BY lock_name`), "applied once")
}

// TestQueuedAcquireRetriedAfterGrant: a queued acquire's request_id, retried
// after its grant, answers with the grant.
func TestQueuedAcquireRetriedAfterGrant(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice"))
	bob := h.acquire("a", "bob", wait(60))
	queued := h.one(bob)
	require.Equal(t, topics.TypeQueued, queued.Type)
	// Retried while waiting: the queued answer again.
	require.Equal(t, queued.EventID, h.apply(bob)[0].EventID)
	require.Equal(t, int64(1), h.scalar(`SELECT count(*) FROM lock_waiters`))

	granted := find(h.apply(h.release("a", "alice")), topics.TypeAcquired)[0]
	again := h.resend(bob, granted)
	require.Equal(t, granted.LockInfo.FencingToken, again.LockInfo.FencingToken)

	// Also when grant and retry share one batch.
	h.one(h.acquire("b", "alice"))
	carol := h.acquire("b", "carol", wait(60))
	evs := h.apply(carol, h.release("b", "alice"), carol)
	require.Equal(t, topics.TypeQueued, evs[0].Type)
	g := find(evs, topics.TypeAcquired)
	require.Len(t, g, 2)
	require.Equal(t, g[0].EventID, g[1].EventID)
	require.Equal(t, carol.RequestID, g[1].RequestID)
}

// equivalenceScript is a fixed mix of commands over three locks whose
// outcomes do not depend on timing (long leases and waits).
func equivalenceScript() []topics.Command {
	n := 0
	cmd := func(op, lock, owner string, mods ...func(*topics.Command)) topics.Command {
		n++
		c := topics.Command{RequestID: fmt.Sprintf("eq-%02d", n), Operation: op, LockName: lock, OwnerID: owner}
		if owner != "" {
			c.ReplyTo = "locks.replies." + owner
		} else {
			c.ReplyTo = "locks.replies.watcher"
		}
		for _, m := range mods {
			m(&c)
		}
		return c
	}
	acq := func(lock, owner string, mods ...func(*topics.Command)) topics.Command {
		return cmd(topics.OpAcquire, lock, owner, append([]func(*topics.Command){lease(60)}, mods...)...)
	}
	rel := func(lock, owner string, mods ...func(*topics.Command)) topics.Command {
		return cmd(topics.OpRelease, lock, owner, mods...)
	}
	ext := func(lock, owner string, mods ...func(*topics.Command)) topics.Command {
		return cmd(topics.OpExtend, lock, owner, mods...)
	}
	qry := func(lock string) topics.Command { return cmd(topics.OpQuery, lock, "") }

	s := []topics.Command{
		acq("l1", "o1"),
		acq("l2", "o2"),
		acq("l1", "o2"), // LOCK_HELD
		acq("l1", "o3", wait(120)),
		acq("l1", "o4", wait(120)),
		ext("l1", "o1"),
		ext("l1", "o2"), // NOT_OWNER
		qry("l1"),
		acq("l3", "o3", lease(45)),
		rel("l2", "o1"), // NOT_OWNER
		rel("l2", "o2"),
		rel("l2", "o2"), // NOT_HELD
		acq("l2", "o4"),
		acq("l2", "o1", wait(120)),
		acq("l1", "o1"),                // renew
		rel("l1", "o4"),                // withdraw
		rel("l1", "o1", token(999999)), // TOKEN_MISMATCH
		rel("l1", "o1"),                // grants o3
		ext("l1", "o3", extendBy(10)),
	}
	s = append(s, s[2]) // a duplicate of the LOCK_HELD acquire
	s = append(s,
		acq("l3", "o1", wait(120)),
		acq("l3", "o2", wait(120)),
		acq("l3", "o4", wait(120)),
		rel("l3", "o2"), // withdraw
		rel("l3", "o3"), // grants o1
		qry("l3"),
		cmd(topics.OpCleanup, "l2", ""),
		rel("l1", "o3"), // nobody waits
		acq("l1", "o2"),
		rel("l2", "o4"), // grants o1
		ext("l2", "o1"),
		ext("l2", "o1", token(999999)), // TOKEN_MISMATCH
		qry("l2"),
		acq("l2", "o1"), // renew
		rel("l3", "o1"), // grants o4
		acq("l3", "o1", wait(120)),
		rel("l1", "o2"),
		qry("nothing"),
	)
	s = append(s, s[10]) // a duplicate of a release
	s = append(s,
		cmd(topics.OpCleanup, topics.CleanupAll, ""),
		acq("l1", "o3", wait(120)), // free: granted at once
		ext("l3", "o4", ns("elsewhere")),
	)
	return s
}

// runResult is what a run of the script leaves, with fencing tokens replaced
// by their rank among the tokens the run handed out.
type runResult struct {
	events  []string
	routes  []string
	locks   []string
	waiters []string
	history []string
}

func (h *harness) result(evs []topics.Event) runResult {
	h.t.Helper()
	tokens := map[int64]bool{}
	for _, ev := range evs {
		if ev.LockInfo != nil && ev.LockInfo.FencingToken != 0 {
			tokens[ev.LockInfo.FencingToken] = true
		}
	}
	var sortedTokens []int64
	for tok := range tokens {
		sortedTokens = append(sortedTokens, tok)
	}
	sort.Slice(sortedTokens, func(i, j int) bool { return sortedTokens[i] < sortedTokens[j] })
	rank := map[int64]int{}
	for i, tok := range sortedTokens {
		rank[tok] = i + 1
	}
	var res runResult
	for _, ev := range evs {
		s := fmt.Sprintf("%s %s req=%s code=%s pos=%d", ev.Type, ev.Operation, ev.RequestID, ev.ErrorCode, ev.QueuePosition)
		if li := ev.LockInfo; li != nil {
			s += fmt.Sprintf(" lock=%s/%s owner=%s status=%s token#%d acq=%d ext=%d lease=%g",
				li.Namespace, li.LockName, li.OwnerID, li.Status, rank[li.FencingToken], li.AcquisitionCount, li.ExtensionCount, li.LeaseDuration)
		}
		if ev.CleanedCount != nil {
			s += fmt.Sprintf(" cleaned=%d %v", *ev.CleanedCount, ev.CleanedLockNames)
		}
		res.events = append(res.events, s)
	}
	res.routes = h.routes()
	rows, err := h.st.Pool.Query(h.t.Context(), `SELECT namespace, lock_name, coalesce(owner_id, ''), status, acquisition_count,
		extension_count, waiter_count, coalesce(fencing_token, 0) FROM `+v1Locks+` ORDER BY namespace, lock_name`)
	require.NoError(h.t, err)
	for rows.Next() {
		var ns, name, owner, status string
		var acqs, exts, waiters, tok int64
		require.NoError(h.t, rows.Scan(&ns, &name, &owner, &status, &acqs, &exts, &waiters, &tok))
		res.locks = append(res.locks, fmt.Sprintf("%s/%s %s %s acq=%d ext=%d waiters=%d token#%d", ns, name, owner, status, acqs, exts, waiters, rank[tok]))
	}
	require.NoError(h.t, rows.Err())
	rows, err = h.st.Pool.Query(h.t.Context(), `SELECT lock_name || ' ' || owner_id || ' ' || request_id FROM lock_waiters ORDER BY lock_name, id`)
	require.NoError(h.t, err)
	res.waiters, err = pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(h.t, err)
	rows, err = h.st.Pool.Query(h.t.Context(), `SELECT lock_name, type, owner_id, fencing_token FROM lock_events ORDER BY lock_name, occurred_at, id`)
	require.NoError(h.t, err)
	for rows.Next() {
		var name, typ, owner string
		var tok int64
		require.NoError(h.t, rows.Scan(&name, &typ, &owner, &tok))
		res.history = append(res.history, fmt.Sprintf("%s %s %s token#%d", name, typ, owner, rank[tok]))
	}
	require.NoError(h.t, rows.Err())
	return res
}

// TestBatchEquivalence: a script applied in one transaction, common cases
// sent ahead as the worker does, ends exactly as the same script applied one
// command per transaction without sending anything ahead.
func TestBatchEquivalence(t *testing.T) {
	script := equivalenceScript()
	require.GreaterOrEqual(t, len(script), 40)

	batched := newHarness(t)
	one := batched.result(batched.apply(script...))

	single := batched.fresh()
	var evs []topics.Event
	for _, c := range script {
		evs = append(evs, single.applyInline(c)...)
	}
	each := single.result(evs)

	requireSameRun(t, each, one)

	// And the script did what it says (so the comparison is not of two
	// identical failures).
	require.Equal(t, []string{
		"/l1 o3 acquired acq=4 ext=0 waiters=0 token#10",
		"/l2 o1 acquired acq=3 ext=1 waiters=0 token#8",
		"/l3 o4 acquired acq=3 ext=0 waiters=1 token#9",
	}, one.locks)
	require.Equal(t, []string{"l3 o1 eq-35"}, one.waiters)
	var types []string
	for _, e := range one.events {
		types = append(types, strings.Fields(e)[0])
	}
	for _, typ := range []string{topics.TypeAcquired, topics.TypeQueued, topics.TypeWithdrawn, topics.TypeReleased,
		topics.TypeExtended, topics.TypeStatus, topics.TypeCleaned, topics.TypeRejected} {
		require.Contains(t, types, typ)
	}
	for _, code := range []string{topics.CodeLockHeld, topics.CodeNotOwner, topics.CodeNotHeld, topics.CodeTokenMismatch} {
		require.Contains(t, strings.Join(one.events, "\n"), "code="+code)
	}
}

// requireSameRun requires a batch's run to match the same commands' run
// one at a time: events, their routes, locks, waiters and history.
func requireSameRun(t *testing.T, each, one runResult) {
	t.Helper()
	require.Equal(t, each.events, one.events)
	require.Equal(t, each.routes, one.routes)
	require.Equal(t, each.locks, one.locks)
	require.Equal(t, each.waiters, one.waiters)
	require.Equal(t, each.history, one.history)
}

// TestRejectBadCommands: records that fail decoding or validation are
// answered, when a valid reply_to can be read, and change no lock.
func TestRejectBadCommands(t *testing.T) {
	h := newHarness(t)
	h.one(h.acquire("a", "alice"))
	h.one(h.acquire("a", "bob", wait(60)))
	h.clearOutbox()
	before := h.snapshot()

	huge := `{"operation":"release","lock_name":"a","owner_id":"alice","reply_to":"locks.replies.alice","pad":"` + strings.Repeat("x", topics.MaxRecordBytes) + `"}`
	cases := []struct {
		name, value string
		code        string
		replyTo     string // "": no reply expected
		requestID   string
	}{
		{"not JSON", `release a please`, topics.CodeInvalidRequest, "", ""},
		{"empty", ``, topics.CodeInvalidRequest, "", ""},
		{"JSON array", `[{"operation":"release"}]`, topics.CodeInvalidRequest, "", ""},
		{"truncated JSON", `{"operation":"release","lock_name":"a","reply_to":"locks.replies.alice"`, topics.CodeInvalidRequest, "", ""},
		{"over 64 KiB: answered", huge, topics.CodeInvalidRequest, "locks.replies.alice", ""},
		{"wrong field type", `{"request_id":"bad-1","operation":"release","lock_name":"a","owner_id":"alice","fencing_token":"one","reply_to":"locks.replies.alice"}`,
			topics.CodeInvalidRequest, "locks.replies.alice", "bad-1"},
		{"no lock_name", `{"request_id":"bad-2","operation":"release","owner_id":"alice","reply_to":"locks.replies.alice"}`,
			topics.CodeInvalidRequest, "locks.replies.alice", "bad-2"},
		{"no owner_id", `{"request_id":"bad-3","operation":"release","lock_name":"a","reply_to":"locks.replies.x"}`,
			topics.CodeInvalidRequest, "locks.replies.x", "bad-3"},
		{"no operation", `{"request_id":"bad-4","lock_name":"a","owner_id":"bob","reply_to":"locks.replies.bob"}`,
			topics.CodeInvalidRequest, "locks.replies.bob", "bad-4"},
		{"unknown operation", `{"request_id":"bad-5","operation":"steal","lock_name":"a","owner_id":"bob","reply_to":"locks.replies.bob"}`,
			topics.CodeInvalidRequest, "locks.replies.bob", "bad-5"},
		{"future version", `{"v":2,"request_id":"bad-6","operation":"release","lock_name":"a","owner_id":"alice","reply_to":"locks.replies.alice"}`,
			topics.CodeUnsupportedVersion, "locks.replies.alice", "bad-6"},
		{"lease out of range", `{"request_id":"bad-7","operation":"acquire","lock_name":"a","owner_id":"carol","lease_duration":0.01,"reply_to":"locks.replies.carol"}`,
			topics.CodeInvalidRequest, "locks.replies.carol", "bad-7"},
		{"wait out of range", `{"request_id":"bad-8","operation":"acquire","lock_name":"a","owner_id":"carol","wait_timeout":-1,"reply_to":"locks.replies.carol"}`,
			topics.CodeInvalidRequest, "locks.replies.carol", "bad-8"},
		{"metadata not an object", `{"request_id":"bad-9","operation":"acquire","lock_name":"a","owner_id":"carol","owner_metadata":[1],"reply_to":"locks.replies.carol"}`,
			topics.CodeInvalidRequest, "locks.replies.carol", "bad-9"},
		{"lock_name * outside cleanup", `{"request_id":"bad-10","operation":"release","lock_name":"*","owner_id":"bob","reply_to":"locks.replies.bob"}`,
			topics.CodeInvalidRequest, "locks.replies.bob", "bad-10"},
		{"lock_name not printable", `{"request_id":"bad-11","operation":"query","lock_name":"a\u0000b","reply_to":"locks.replies.q"}`,
			topics.CodeInvalidRequest, "locks.replies.q", "bad-11"},
		{"extension out of range", `{"request_id":"bad-12","operation":"extend","lock_name":"a","owner_id":"alice","extension_duration":100000,"reply_to":"locks.replies.alice"}`,
			topics.CodeInvalidRequest, "locks.replies.alice", "bad-12"},
		{"max_age negative", `{"request_id":"bad-13","operation":"cleanup","lock_name":"*","max_age_seconds":-5,"reply_to":"locks.replies.janitor"}`,
			topics.CodeInvalidRequest, "locks.replies.janitor", "bad-13"},
		{"reply_to outside the prefix", `{"request_id":"bad-14","operation":"release","lock_name":"a","owner_id":"alice","reply_to":"locks.commands"}`,
			topics.CodeInvalidRequest, "", "bad-14"},
		{"reply_to the bare prefix", `{"request_id":"bad-15","operation":"release","lock_name":"a","owner_id":"alice","reply_to":"locks.replies."}`,
			topics.CodeInvalidRequest, "", "bad-15"},
		{"reply_to not a topic name", `{"request_id":"bad-16","operation":"release","lock_name":"a","owner_id":"alice","reply_to":"locks.replies.a/b"}`,
			topics.CodeInvalidRequest, "", "bad-16"},
		{"future version, reply_to outside the prefix", `{"v":3,"operation":"query","lock_name":"a","reply_to":"locks.lock.acquired.v1"}`,
			topics.CodeUnsupportedVersion, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := topics.Decode([]byte(tc.value), h.env.Names.ReplyPrefix)
			var rej *topics.Rejection
			require.True(t, errors.As(err, &rej), "Decode must refuse it: %v", err)
			require.Equal(t, tc.code, rej.Code)
			h.clearOutbox()
			var ev topics.Event
			require.NoError(t, h.st.InTx(t.Context(), func(tx pgx.Tx) error {
				b := handlers.NewBatch(tx, h.env)
				ev = b.Reject(rej, time.Now())
				return b.Flush(t.Context())
			}))
			require.Equal(t, topics.TypeRejected, ev.Type)
			require.False(t, ev.Success)
			require.Equal(t, tc.code, ev.ErrorCode)
			require.NotEmpty(t, ev.ErrorMessage)
			out := h.outbox()
			if tc.replyTo == "" {
				require.Empty(t, out, "no valid reply_to: no reply")
			} else {
				require.Len(t, out, 1)
				require.Equal(t, tc.replyTo, out[0].Topic)
				require.Equal(t, ev.EventID, out[0].Event.EventID)
				require.Equal(t, topics.TypeRejected, out[0].Event.Type)
				require.Equal(t, tc.code, out[0].Event.ErrorCode)
				require.Equal(t, tc.requestID, out[0].Event.RequestID)
				require.False(t, out[0].Event.Success)
				require.Equal(t, "lock.rejected", out[0].Headers["ce_type"])
			}
			require.Equal(t, before, h.snapshot(), "a bad command changes no lock, waiter or outcome")
		})
	}
	// The rejected request_ids were not recorded as applied: a valid command
	// under one of them is applied normally.
	fixed := h.release("a", "alice")
	fixed.RequestID = "bad-1"
	require.Equal(t, topics.TypeReleased, h.one(fixed).Type)
}

// TestHistoryRace: 20 owners race over 5 locks, each command in its own
// transaction, with an expiry scheduler running alongside. Some leases are
// abandoned to expire and some acquires wait in the queue. The history must
// show one holder at a time per lock, with strictly increasing tokens.
func TestHistoryRace(t *testing.T) {
	h := newHarness(t)
	const owners, rounds, nLocks = 20, 1000, 5
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	applyOwn := func(c topics.Command) (topics.Event, error) {
		var answer topics.Event
		err := h.st.InTx(ctx, func(tx pgx.Tx) error {
			b := handlers.NewBatch(tx, h.env)
			evs, err := b.Apply(ctx, c, time.Now())
			if err != nil {
				return err
			}
			answer = topics.Event{}
			for _, ev := range evs {
				if ev.RequestID == c.RequestID {
					answer = ev
				}
			}
			return b.Flush(ctx)
		})
		return answer, err
	}

	var next, released, withdrawn, abandoned atomic.Int64
	errs := make(chan error, owners+1)
	var wg sync.WaitGroup
	for o := 0; o < owners; o++ {
		wg.Add(1)
		go func(o int) {
			defer wg.Done()
			owner := fmt.Sprintf("owner-%02d", o)
			rng := rand.New(rand.NewPCG(uint64(o), 7))
			for {
				n := next.Add(1)
				if n > rounds {
					return
				}
				lock := fmt.Sprintf("lock-%d", rng.IntN(nLocks))
				acq := topics.Command{RequestID: fmt.Sprintf("r%d-acq", n), Operation: topics.OpAcquire, LockName: lock, OwnerID: owner, LeaseDuration: 30}
				switch n % 10 {
				case 0: // abandon a short lease: it expires on its own
					acq.LeaseDuration = 0.1
				case 3, 6: // wait a little in the queue
					acq.WaitTimeout = 0.05
				}
				ev, err := applyOwn(acq)
				if err != nil {
					errs <- err
					return
				}
				switch {
				case ev.Type == topics.TypeAcquired && acq.LeaseDuration < 1:
					abandoned.Add(1)
					continue
				case ev.Type == topics.TypeRejected && ev.ErrorCode == topics.CodeLockHeld:
					continue
				case ev.Type != topics.TypeAcquired && ev.Type != topics.TypeQueued:
					errs <- fmt.Errorf("acquire %s by %s: unexpected %s %s", lock, owner, ev.Type, ev.ErrorCode)
					return
				}
				// Held, or waiting: give it up either way.
				rel := topics.Command{RequestID: fmt.Sprintf("r%d-rel", n), Operation: topics.OpRelease, LockName: lock, OwnerID: owner}
				if ev.Type == topics.TypeAcquired {
					rel.FencingToken = &ev.LockInfo.FencingToken
				}
				ev, err = applyOwn(rel)
				if err != nil {
					errs <- err
					return
				}
				switch {
				case ev.Type == topics.TypeReleased:
					released.Add(1)
				case ev.Type == topics.TypeWithdrawn:
					withdrawn.Add(1)
				case rel.FencingToken == nil && (ev.ErrorCode == topics.CodeNotOwner || ev.ErrorCode == topics.CodeNotHeld):
					// A queued acquire that timed out meanwhile.
				default:
					errs <- fmt.Errorf("release %s by %s: unexpected %s %s", lock, owner, ev.Type, ev.ErrorCode)
					return
				}
			}
		}(o)
	}
	stop := make(chan struct{})
	var sched sync.WaitGroup
	sched.Add(1)
	go func() {
		defer sched.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			err := h.st.InTx(ctx, func(tx pgx.Tx) error {
				b := handlers.NewBatch(tx, h.env)
				if _, _, err := b.ExpireDue(ctx); err != nil {
					return err
				}
				return b.Flush(ctx)
			})
			if err != nil {
				errs <- fmt.Errorf("expiry: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(stop)
	sched.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("released %d, withdrawn %d, abandoned %d", released.Load(), withdrawn.Load(), abandoned.Load())
	require.Positive(t, released.Load())
	require.Positive(t, abandoned.Load())

	rows, err := h.st.Pool.Query(ctx, `SELECT lock_name, type, owner_id, fencing_token FROM lock_events
		WHERE type IN ('lock.acquired', 'lock.released', 'lock.expired') ORDER BY lock_name, occurred_at, id`)
	require.NoError(t, err)
	type state struct {
		holder string
		token  int64
		held   bool
	}
	locks := map[string]*state{}
	var acquired, ended, expired int
	var name, typ, owner string
	var tok int64
	_, err = pgx.ForEachRow(rows, []any{&name, &typ, &owner, &tok}, func() error {
		s := locks[name]
		if s == nil {
			s = &state{}
			locks[name] = s
		}
		switch typ {
		case topics.TypeAcquired:
			if s.held {
				return fmt.Errorf("%s: %s acquired (token %d) while %s held it (token %d)", name, owner, tok, s.holder, s.token)
			}
			if tok <= s.token {
				return fmt.Errorf("%s: token %d after %d", name, tok, s.token)
			}
			s.holder, s.token, s.held = owner, tok, true
			acquired++
		default:
			if !s.held || s.holder != owner || s.token != tok {
				return fmt.Errorf("%s: %s by %s (token %d) but held=%v by %s (token %d)", name, typ, owner, tok, s.held, s.holder, s.token)
			}
			s.held = false
			ended++
			if typ == topics.TypeExpired {
				expired++
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Len(t, locks, nLocks)
	require.Equal(t, int(released.Load()), ended-expired, "every successful release is in the history once")
	require.Positive(t, expired)
	require.GreaterOrEqual(t, acquired, ended)
	t.Logf("history: %d acquired, %d ended (%d expired)", acquired, ended, expired)
}

// One transaction may apply several partitions' commands (the worker's
// applier does): what each command writes goes under its own partition, the
// outbox rows its relay publishes and the lease its scheduler watches, both
// when its common case goes ahead and when the general path decides.
func TestBatchSpansPartitions(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	cmds := []topics.Command{
		h.acquire("p3-ahead", "a"),
		h.acquire("p5-ahead", "b"),
		h.acquire("p3-ahead", "c", wait(10)), // second of its lock: general path, queued
		h.acquire("p5-general", "d"),
	}
	partitions := []int32{3, 5, 3, 5}
	require.NoError(t, h.applyAcross(ctx, cmds, partitions, 3)) // the last is left to the general path

	rows, err := h.st.Pool.Query(ctx, `SELECT lock_name, source_partition FROM locks ORDER BY lock_name`)
	require.NoError(t, err)
	locks, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		Name      string
		Partition int32
	}])
	require.NoError(t, err)
	require.Equal(t, "p3-ahead", locks[0].Name)
	require.EqualValues(t, 3, locks[0].Partition)
	require.EqualValues(t, 5, locks[1].Partition)
	require.EqualValues(t, 5, locks[2].Partition)

	var waiterPartition int32
	require.NoError(t, h.st.Pool.QueryRow(ctx, `SELECT source_partition FROM lock_waiters WHERE owner_id = 'c'`).Scan(&waiterPartition))
	require.EqualValues(t, 3, waiterPartition)

	// Every outbox row is its command's partition's, in command order; a
	// lock's state follows its events, once per transaction: p3-ahead's
	// after c's queuing, its last change.
	rows, err = h.st.Pool.Query(ctx, `SELECT source_partition, topic, key FROM outbox ORDER BY id`)
	require.NoError(t, err)
	type outboxRow struct {
		Partition int32
		Topic     string
		Key       []byte
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[outboxRow])
	require.NoError(t, err)
	acquired, state := h.env.Names.Acquired, h.env.Names.State
	want := []outboxRow{
		{3, "locks.replies.a", []byte("p3-ahead")}, {3, acquired, []byte("p3-ahead")},
		{5, "locks.replies.b", []byte("p5-ahead")}, {5, acquired, []byte("p5-ahead")}, {5, state, []byte("p5-ahead")},
		{3, "locks.replies.c", []byte("p3-ahead")}, {3, state, []byte("p3-ahead")},
		{5, "locks.replies.d", []byte("p5-general")}, {5, acquired, []byte("p5-general")}, {5, state, []byte("p5-general")},
	}
	require.Equal(t, want, got)
}

// Outcomes stored before the reply_to was kept (migration 005) are answered
// to any copy, as they were.
func TestOutcomeStoredWithoutReplyToGoesToAnyCopy(t *testing.T) {
	h := newHarness(t)
	cmd := h.acquire("a", "alice")
	first := h.one(cmd)
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE processed_requests SET reply_to = NULL`)
	require.NoError(t, err)
	h.clearOutbox()
	cmd.ReplyTo = "locks.replies.elsewhere"
	again := h.apply(cmd) // a new transaction reads the row back
	require.Equal(t, first.EventID, again[0].EventID)
	require.Equal(t, []string{"locks.replies.elsewhere lock.acquired"}, h.routes())
}

// A copy of a request_id "with any content" gets the stored outcome keyed
// as the event it is: by the lock (or session) the event is about, not by
// the lock or session the copy names, in a later transaction or in the
// same batch.
func TestCopyAnsweredUnderItsEventsKey(t *testing.T) {
	h := newHarness(t)
	keys := func() []string {
		t.Helper()
		var out []string
		for _, r := range h.outbox() {
			out = append(out, r.Topic+" "+r.Key+" "+r.Event.Type)
		}
		return out
	}
	acq := h.acquire("L", "alice", ns("n"))
	other := acq
	other.Namespace, other.LockName = "", "ZZ"
	h.apply(acq, other)
	require.Equal(t, "locks.replies.alice n/L lock.acquired", keys()[2], "the copy in the same batch")
	h.clearOutbox()
	h.apply(other)
	require.Equal(t, []string{"locks.replies.alice n/L lock.acquired"}, keys())

	open := h.session(topics.OpSessionOpen, "s1", "alice")
	h.one(open)
	h.clearOutbox()
	moved := open
	moved.SessionID = "s2"
	h.apply(moved)
	require.Equal(t, []string{"locks.replies.alice session:s1 session.opened"}, keys())
	// An acquire with the request_id gets the session's event under the
	// session key.
	acqCopy := h.acquire("ZZ", "alice")
	acqCopy.RequestID = open.RequestID
	h.clearOutbox()
	h.apply(acqCopy)
	require.Equal(t, []string{"locks.replies.alice session:s1 session.opened"}, keys())
}

// A holder's extends and release that follow its acquire of the lock in one
// batch go ahead with it (extendAfterSQL, releaseAfterSQL) only while every
// command before them applied there: the lease must be the one that acquire
// was granted, extended as often as the extends before. Otherwise they wait
// for the general path, in order. Whatever the case, the batch does what
// the commands do one at a time.
func TestHolderCommandsAfterAcquireInOneBatch(t *testing.T) {
	cmds := func(c ...topics.Command) []topics.Command { return c }
	for _, tc := range []struct {
		name string
		// script gives the batch before (applied first) and the batch.
		script func(h *harness) (before, batch []topics.Command)
		// prune deletes the stored outcomes of the batch before.
		prune bool
	}{
		{name: "free lock", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x"), h.release("a", "x"), h.acquire("a", "y"))
		}},
		{name: "the owner holds it already", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return cmds(h.acquire("a", "x")), cmds(h.acquire("a", "x"), h.release("a", "x"), h.acquire("a", "y"))
		}},
		{name: "another holds it", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return cmds(h.acquire("a", "y")), cmds(h.acquire("a", "x", wait(30)), h.release("a", "x"), h.release("a", "y"))
		}},
		{name: "readers", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x", shared), h.acquire("a", "y", shared), h.release("a", "y"), h.acquire("a", "z"))
		}},
		{name: "extends, then the release", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x"), h.extend("a", "x", extendBy(5)), h.extend("a", "x"), h.release("a", "x"))
		}},
		{name: "an extend refused past max_hold, then the release", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x", lease(60), maxHold(65)), h.extend("a", "x"), h.release("a", "x"))
		}},
		{name: "an extend refused, a smaller one, the release", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x", lease(60), maxHold(65)), h.extend("a", "x"), h.extend("a", "x", extendBy(2)), h.release("a", "x"))
		}},
		{name: "another owner's extend between", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x"), h.extend("a", "y"), h.release("a", "x"))
		}},
		// A repeated acquire is not granted again: the lease its request_id
		// was granted before is not this batch's.
		{name: "a repeated acquire, its lease extended before", script: func(h *harness) ([]topics.Command, []topics.Command) {
			acq := h.acquire("a", "x")
			return cmds(acq, h.extend("a", "x")), cmds(acq, h.extend("a", "x"), h.release("a", "x"))
		}},
		{name: "a repeated acquire, extends in either order", script: func(h *harness) ([]topics.Command, []topics.Command) {
			acq := h.acquire("a", "x")
			return cmds(acq, h.extend("a", "x")), cmds(acq, h.extend("a", "x"), h.extend("a", "x", extendBy(7)))
		}},
		{name: "a repeated acquire, a wrong token, then more", script: func(h *harness) ([]topics.Command, []topics.Command) {
			acq := h.acquire("a", "x")
			return cmds(acq, h.extend("a", "x"), h.extend("a", "x")), cmds(acq, h.extend("a", "x", token(999)), h.extend("a", "x"), h.release("a", "x"))
		}},
		{name: "repeated readers", script: func(h *harness) ([]topics.Command, []topics.Command) {
			x, y := h.acquire("a", "x", shared), h.acquire("a", "y", shared)
			return cmds(x, y, h.extend("a", "y")), cmds(x, y, h.extend("a", "y"), h.release("a", "y"))
		}},
		{name: "an acquire whose stored outcome was pruned", prune: true, script: func(h *harness) ([]topics.Command, []topics.Command) {
			acq := h.acquire("a", "x")
			return cmds(acq), cmds(acq, h.extend("a", "x"), h.release("a", "x"))
		}},
		{name: "hand-overs: acquires after releases", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x"), h.release("a", "x"), h.acquire("a", "y"), h.extend("a", "y"), h.release("a", "y"),
				h.acquire("a", "z", shared), h.release("a", "z"), h.acquire("a", "x"))
		}},
		{name: "an acquire after a release that did not apply", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return cmds(h.acquire("a", "w")), cmds(h.release("a", "x"), h.acquire("a", "y"), h.release("a", "w"), h.acquire("a", "z"))
		}},
		{name: "an acquire after a release, the lock new", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.release("a", "x"), h.acquire("a", "y"))
		}},
		{name: "an acquire after the release of a repeated acquire", script: func(h *harness) ([]topics.Command, []topics.Command) {
			old := h.acquire("a", "x")
			return cmds(old, h.release("a", "x")), cmds(h.acquire("a", "x"), h.release("a", "x"), old, h.release("a", "x"), h.acquire("a", "z"))
		}},
		{name: "an older lease released, its owner's repeated acquire and release, another's acquire", script: func(h *harness) ([]topics.Command, []topics.Command) {
			old := h.acquire("a", "x")
			return cmds(old), cmds(h.release("a", "x"), old, h.release("a", "x"), h.acquire("a", "z"))
		}},
		{name: "an acquire after a release with a wrong token", script: func(h *harness) ([]topics.Command, []topics.Command) {
			return nil, cmds(h.acquire("a", "x"), h.release("a", "x", token(999)), h.acquire("a", "y"), h.release("a", "x"), h.acquire("a", "y"))
		}},
		{name: "a reader after a renewal whose stored outcome was pruned", prune: true, script: func(h *harness) ([]topics.Command, []topics.Command) {
			acq := h.acquire("a", "x", shared)
			return cmds(acq), cmds(acq, h.acquire("a", "y", shared))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			batched := newHarness(t)
			single := batched.fresh()
			before, script := tc.script(batched)
			if len(before) > 0 {
				batched.apply(before...)
				for _, c := range before {
					single.applyInline(c)
				}
			}
			if tc.prune {
				for _, h := range []*harness{batched, single} {
					_, err := h.st.Pool.Exec(context.Background(), `DELETE FROM processed_requests`)
					require.NoError(t, err)
				}
			}
			one := batched.result(batched.apply(script...))
			var evs []topics.Event
			for _, c := range script {
				evs = append(evs, single.applyInline(c)...)
			}
			requireSameRun(t, single.result(evs), one)
		})
	}
}

// TestNoHistory: with Env.NoHistory (LOCK_EVENTS_RETENTION=0) grants and
// ends write no lock_events rows; the events, their records and the
// outcomes are as with the history.
func TestNoHistory(t *testing.T) {
	with := newHarness(t)
	without := with.fresh()
	without.env.NoHistory = true
	for _, h := range []*harness{with, without} {
		h.one(h.acquire("a", "alice"))
		h.one(h.acquire("a", "bob", func(c *topics.Command) { c.WaitTimeout = 60 }))
		h.one(h.release("a", "alice"))
	}
	require.Equal(t, []string{"lock.acquired alice", "lock.released alice", "lock.acquired bob"}, with.history("a"))
	require.Empty(t, without.history("a"))
	require.Equal(t, with.routes(), without.routes())
	require.Equal(t, with.lockStates(), without.lockStates())
	require.Equal(t, with.scalar(`SELECT count(*) FROM processed_requests`), without.scalar(`SELECT count(*) FROM processed_requests`))
}

// TestResentAcquireOfAFreedLockGrantsNothing: an acquire resent after its
// lease was released, the lock free, gets its stored outcome (its token)
// and is not granted again, sent ahead or inline.
func TestResentAcquireOfAFreedLockGrantsNothing(t *testing.T) {
	base := newHarness(t)
	for _, ahead := range []bool{true, false} {
		h := base.fresh()
		acq := h.acquire("i", "alice")
		first := h.one(acq)
		require.Equal(t, topics.TypeAcquired, first.Type)
		require.Equal(t, topics.TypeReleased, h.one(h.release("i", "alice")).Type)
		// Bounded: a grant made again would meet the stored outcome's key
		// and be retried without end, as any failed transaction is.
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		out, err := h.applyTx(ctx, ahead, []topics.Command{acq})
		cancel()
		require.NoError(t, err)
		require.Len(t, out, 1)
		require.Equal(t, first.EventID, out[0].EventID, "the stored outcome (ahead %v)", ahead)
		require.Equal(t, first.LockInfo.FencingToken, out[0].LockInfo.FencingToken)
		require.Zero(t, h.scalar(`SELECT count(*) FROM lock_holders`), "nothing granted again")
	}
}
