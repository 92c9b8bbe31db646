package handlers_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

func generation(g int64) func(*topics.Command) {
	return func(c *topics.Command) { c.SessionGeneration = &g }
}

// reopened opens session "s" of owner "svc", lets the session.opened
// answer go to opened, ends it as its scheduler would once it expired,
// and opens "s" again with the same owner, as a restarted process resuming
// its session does (WithSessionID and WithSessionOwner). It returns both
// opens' answers; between them, before applies what the first life sends
// (its commands are applied only after the reopen, as a lagging partition
// would).
func reopened(h *harness, before func(life1 topics.Event)) (life1, life2 topics.Event) {
	h.t.Helper()
	life1 = h.one(h.session(topics.OpSessionOpen, "s", "svc", ttl(60)))
	require.Equal(h.t, topics.TypeSessionOpened, life1.Type, life1.ErrorMessage)
	before(life1)
	h.waitPast(h.timeOf(`UPDATE sessions SET expires_at = clock_timestamp() WHERE id = 's' RETURNING expires_at`))
	n, _ := h.expireDueEvents()
	require.Equal(h.t, 1, n)
	life2 = h.one(h.session(topics.OpSessionOpen, "s", "svc", ttl(60)))
	require.Equal(h.t, topics.TypeSessionOpened, life2.Type, life2.ErrorMessage)
	require.Positive(h.t, life1.SessionInfo.Generation)
	require.Greater(h.t, life2.SessionInfo.Generation, life1.SessionInfo.Generation, "each life a generation of its own")
	return life1, life2
}

// sessionState is the sessions rows and the lock tables, to show that a
// refused command changed neither.
func (h *harness) sessionState() string {
	h.t.Helper()
	return h.scalarText(`SELECT json_build_object(
		'sessions', (SELECT coalesce(json_agg(s ORDER BY id), '[]') FROM sessions s),
		'locks', (SELECT coalesce(json_agg(l ORDER BY namespace, lock_name), '[]') FROM locks l),
		'holders', (SELECT coalesce(json_agg(h ORDER BY fencing_token), '[]') FROM lock_holders h),
		'waiters', (SELECT coalesce(json_agg(w ORDER BY id), '[]') FROM lock_waiters w))::text`)
}

// An acquire sent in the first life of session "s" and applied only once
// "s" expired and was opened again by the same owner (the reviewer's
// scenario: a lagging partition, or replay after an outage) names the
// first life's generation, and is refused SESSION_NOT_FOUND: it is granted
// no lease in the new life, which never asked for it, and changes nothing.
// The new life's own acquire, by its generation, is granted.
func TestLateAcquireOfAnEarlierLifeIsRefused(t *testing.T) {
	h := newHarness(t)
	var late topics.Command
	_, life2 := reopened(h, func(life1 topics.Event) {
		late = h.acquire("orders", "svc", inSession("s"), generation(life1.SessionInfo.Generation), lease(1))
	})
	before := h.sessionState()
	ev := h.one(late)
	require.Equal(t, topics.TypeRejected, ev.Type)
	require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode, ev.ErrorMessage)
	require.Contains(t, ev.ErrorMessage, "the session_id was opened again")
	require.Equal(t, before, h.sessionState())
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("orders", "other", lease(60))).Type, "the lock is free")

	ev = h.one(h.acquire("stock", "svc", inSession("s"), generation(life2.SessionInfo.Generation)))
	require.Equal(t, topics.TypeAcquired, ev.Type, ev.ErrorMessage)
	require.Equal(t, "s", ev.LockInfo.SessionID)
}

// A keep-alive or close sent in the first life, applied after the second
// was opened, is refused SESSION_NOT_FOUND and neither extends nor ends
// the second life, whose lease stays held; the second life's own close
// (its generation) ends it. Every session event tells the generation.
func TestLateKeepAliveAndCloseOfAnEarlierLifeAreRefused(t *testing.T) {
	h := newHarness(t)
	var keep, closing topics.Command
	life1, life2 := reopened(h, func(life1 topics.Event) {
		g := generation(life1.SessionInfo.Generation)
		keep = h.session(topics.OpSessionKeepAlive, "s", "svc", g)
		closing = h.session(topics.OpSessionClose, "s", "svc", g)
	})
	g2 := generation(life2.SessionInfo.Generation)
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("orders", "svc", inSession("s"), g2)).Type)
	before := h.sessionState()
	for _, late := range []topics.Command{keep, closing} {
		ev := h.one(late)
		require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode, "%s: %s", late.Operation, ev.ErrorMessage)
		require.Contains(t, ev.ErrorMessage, "of generation ")
		require.Equal(t, before, h.sessionState(), late.Operation)
	}
	require.Zero(t, h.expireDue())

	kept := h.one(h.session(topics.OpSessionKeepAlive, "s", "svc", g2))
	require.Equal(t, topics.TypeSessionKeptAlive, kept.Type, kept.ErrorMessage)
	require.Equal(t, life2.SessionInfo.Generation, kept.SessionInfo.Generation)
	closed := h.one(h.session(topics.OpSessionClose, "s", "svc", g2))
	require.Equal(t, topics.TypeSessionClosed, closed.Type, closed.ErrorMessage)
	require.Equal(t, life2.SessionInfo.Generation, closed.SessionInfo.Generation)
	require.Equal(t, 1, closed.SessionInfo.Leases)
	require.NotEqual(t, life1.SessionInfo.Generation, closed.SessionInfo.Generation)
}

// Without session_generation (a client from before it) the commands act
// on whatever life of the session_id is live, as before: the reviewer's
// late acquire is granted in the second life.
func TestSessionCommandsWithoutAGeneration(t *testing.T) {
	h := newHarness(t)
	var late topics.Command
	reopened(h, func(topics.Event) { late = h.acquire("orders", "svc", inSession("s"), lease(1)) })
	ev := h.one(late)
	require.Equal(t, topics.TypeAcquired, ev.Type, ev.ErrorMessage)
	require.Equal(t, "s", ev.LockInfo.SessionID)
	require.Equal(t, topics.TypeSessionKeptAlive, h.one(h.session(topics.OpSessionKeepAlive, "s", "svc")).Type)
	closed := h.one(h.session(topics.OpSessionClose, "s", "svc"))
	require.Equal(t, topics.TypeSessionClosed, closed.Type)
	require.Equal(t, 1, closed.SessionInfo.Leases)
}

// A generation above the open life's was never opened: a command naming
// one is refused SESSION_NOT_FOUND saying so (not that the id was opened
// again), and changes nothing, whoever sends it.
func TestGenerationNeverOpenedIsRefused(t *testing.T) {
	h := newHarness(t)
	opened := h.one(h.session(topics.OpSessionOpen, "s", "svc", ttl(60)))
	require.Equal(t, topics.TypeSessionOpened, opened.Type, opened.ErrorMessage)
	future := generation(opened.SessionInfo.Generation + 1000)
	before := h.sessionState()
	for _, cmd := range []topics.Command{
		h.session(topics.OpSessionKeepAlive, "s", "svc", future),
		h.session(topics.OpSessionKeepAlive, "s", "intruder", future),
		h.session(topics.OpSessionClose, "s", "svc", future),
		h.acquire("orders", "svc", inSession("s"), future),
	} {
		ev := h.one(cmd)
		require.Equal(t, topics.TypeRejected, ev.Type)
		require.Equal(t, topics.CodeSessionNotFound, ev.ErrorCode, ev.ErrorMessage)
		require.Contains(t, ev.ErrorMessage, "was never opened")
		require.NotContains(t, ev.ErrorMessage, "opened again")
	}
	require.Equal(t, before, h.sessionState())
}
