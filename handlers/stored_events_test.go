package handlers_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// Events and lock states are stored compacted (topics.CompactEvent,
// CompactLockState) unless PlainEvents, and either form is read: an outcome
// stored plain by an earlier version, or with PlainEvents during a rolling
// upgrade, is answered again as it was.
func TestStoredEventsForms(t *testing.T) {
	h := newHarness(t)
	// The first bytes of the outbox rows' headers and values, events' then
	// lock states', and of the outcomes.
	forms := func() (outbox, outcomes []string) {
		t.Helper()
		return h.texts(`SELECT substr(headers, 1, 1)::text || substr(value, 1, 1)::text FROM outbox ORDER BY topic = $1, id`, h.env.Names.State),
			h.texts(`SELECT substr(outcome, 1, 1)::text FROM processed_requests ORDER BY request_id`)
	}

	h.env.PlainEvents = true
	plain := h.acquire("a", "alice")
	ev := h.one(plain)
	rows, outcomes := forms()
	require.Equal(t, []string{`\x00\x7b`, `\x00\x7b`, `\x00\x7b`}, rows,
		"the reply, the lifecycle record and the lock state: headers as EncodeHeaders writes them, the value JSON")
	require.Equal(t, []string{`\x7b`}, outcomes)

	h.env.PlainEvents = false
	h.resend(plain, ev)
	h.clearOutbox()
	h.one(h.release("a", "alice"))
	rows, outcomes = forms()
	require.Equal(t, []string{`\x01\x01`, `\x01\x01`, `\x02\x02`}, rows, "compacted, headers derived")
	require.Equal(t, []string{`\x7b`, `\x01`}, outcomes, "the earlier outcome as it was, the new one compacted")
	h.resend(plain, ev)
}

// TestUnreadableOutcome: a stored outcome damaged in the database, looked
// up one by one (no prefetch), refuses its request's copy
// REQUEST_ID_CONFLICT, changes nothing and tells Env.OnUnreadableOutcome;
// the command after it in the batch is applied.
func TestUnreadableOutcome(t *testing.T) {
	h := newHarness(t)
	var told []string
	h.env.OnUnreadableOutcome = func(id string, _ int32) { told = append(told, id) }
	first := h.acquire("a", "alice")
	h.one(first)
	_, err := h.st.Pool.Exec(context.Background(), `UPDATE processed_requests SET outcome = substr(outcome, 1, 5)`)
	require.NoError(t, err)
	before := h.snapshot()
	h.clearOutbox()
	evs := h.apply(first)
	require.Len(t, evs, 1)
	require.Equal(t, topics.TypeRejected, evs[0].Type)
	require.Equal(t, topics.CodeRequestIDConflict, evs[0].ErrorCode)
	require.Contains(t, evs[0].ErrorMessage, "cannot be read back")
	require.Equal(t, []string{first.RequestID}, told)
	require.Equal(t, before, h.snapshot())
	require.Equal(t, topics.TypeAcquired, h.one(h.acquire("b", "alice")).Type)
}
