package worker

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/topics"
)

// budgetMetrics records the results of each transaction (Batch), the
// request_ids answered (Events) and the batches skipped unread, in order.
type budgetMetrics struct {
	noMetrics
	mu       sync.Mutex
	batches  []int
	answered []string
	skipped  int
}

func (m *budgetMetrics) Batch(records int, _ time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batches = append(m.batches, records)
}

func (m *budgetMetrics) Events(requestID string, _ []topics.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.answered = append(m.answered, requestID)
}

func (m *budgetMetrics) DeadLettered(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if reason == DeadLetterBatchTooLarge {
		m.skipped++
	}
}

// queriesBudget sets txnBudget to take n queries a transaction (each
// costs topics.MaxHoldersBytes and its record's few bytes) until the test
// ends.
func queriesBudget(t *testing.T, n int) {
	was := txnBudget
	txnBudget = n*topics.MaxHoldersBytes + 4<<10
	t.Cleanup(func() { txnBudget = was })
}

// queries makes n query records of partition p at offsets from.., and
// their request_ids.
func queries(t *testing.T, p int32, from int64, n int) ([]*kgo.Record, []string) {
	var rs []*kgo.Record
	var ids []string
	for i := range n {
		off := from + int64(i)
		id := "q-" + strconv.Itoa(int(p)) + "-" + strconv.FormatInt(off, 10)
		v, err := topics.Command{RequestID: id, Operation: topics.OpQuery, LockName: "big"}.Encode()
		require.NoError(t, err)
		rs = append(rs, &kgo.Record{Topic: topics.DefaultNames().Commands, Partition: p, Offset: off, Key: []byte("big"), Value: v})
		ids = append(ids, id)
	}
	return rs, ids
}

// A burst of queries, each of which may be answered with
// topics.MaxHoldersBytes of holders, is applied in several transactions,
// each within the budget: the first part is cut in the middle, the second
// left whole for the next transaction, and that one cut again. Every
// query is answered once, in order, and every segment released once.
func TestBudgetCutsBatchIntoTransactions(t *testing.T) {
	w, st := newApplier(t)
	m := &budgetMetrics{}
	w.cfg.Metrics = m
	queriesBudget(t, 3)
	p0, p1 := w.newPartition(w.hard, 0), w.newPartition(w.hard, 1)
	r0, ids0 := queries(t, 0, 0, 5)
	r1, ids1 := queries(t, 1, 0, 5)
	now := time.Now()
	apply(w, segment{p: p0, records: r0[:2], polledAt: now}, segment{p: p1, records: r1, polledAt: now},
		segment{p: p0, records: r0[2:], polledAt: now})

	require.Equal(t, []int{3, 3, 3, 1}, m.batches, "transactions of three queries at most")
	require.Equal(t, append(ids0, ids1...), m.answered)
	require.EqualValues(t, 5, storedOffset(t, st, 0))
	require.EqualValues(t, 5, storedOffset(t, st, 1))
	require.EqualValues(t, 5, p0.expected)
	require.EqualValues(t, 5, p1.expected)
	p0.pending.Wait() // each segment released once: a second Done panics
	p1.pending.Wait()
}

// A batch skipped unread (too large) is dead-lettered by the transaction
// that applies the records before it: one cut before it leaves it for the
// next, which marks it once, and one cut after it marks it in the first.
func TestBudgetCutMarksSkipOnce(t *testing.T) {
	w, st := newApplier(t)
	m := &budgetMetrics{}
	w.cfg.Metrics = m
	queriesBudget(t, 3)
	p := w.newPartition(w.hard, 0)
	commands := topics.DefaultNames().Commands
	early := &kgo.ErrDecompressTooLarge{Topic: commands, Partition: 0, Offset: 1, NextOffset: 3}
	late := &kgo.ErrDecompressTooLarge{Topic: commands, Partition: 0, Offset: 7, NextOffset: 9}
	r, ids := queries(t, 0, 3, 4) // offsets 3..6, between the skipped batches
	first, firstID := queries(t, 0, 0, 1)
	now := time.Now()
	apply(w, segment{p: p, records: first, tooLarge: early, polledAt: now},
		segment{p: p, records: r, tooLarge: late, polledAt: now})

	require.Equal(t, []int{3, 2}, m.batches, "cut after offset 4")
	require.Equal(t, append(firstID, ids...), m.answered)
	require.Equal(t, 2, m.skipped, "each skipped batch counted once")
	markers := outboxRows(t, st, topics.DefaultNames().DeadLetter, 0)
	require.Len(t, markers, 2, "each skipped batch marked once")
	require.EqualValues(t, 9, storedOffset(t, st, 0))
	require.EqualValues(t, 9, p.expected)
	p.pending.Wait()
}
