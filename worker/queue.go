package worker

import (
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// segment is one poll's records of one owned partition.
type segment struct {
	p        *partition
	records  []*kgo.Record
	polledAt time.Time
}

// queue hands polled records from the poll loop to the applier. The applier
// takes everything that arrived while its last transaction ran, so batches
// grow with the load instead of transactions multiplying with it.
type queue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []segment
	records int
	// limit bounds pending records: submit blocks beyond it, which is the
	// backpressure on polling.
	limit int

	submitted, applied uint64 // polls
	closed             bool   // no more submits
	stopped            bool   // the applier is gone: nothing more is applied
}

func newQueue(limit int) *queue {
	q := &queue{limit: limit}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// submit queues one poll's segments, waiting while the queue is full.
func (q *queue) submit(segs []segment) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.records >= q.limit && !q.stopped {
		q.cond.Wait()
	}
	if q.closed || q.stopped {
		return
	}
	q.pending = append(q.pending, segs...)
	for _, s := range segs {
		q.records += len(s.records)
	}
	q.submitted++
	q.cond.Broadcast()
}

// take waits for pending segments and takes them all, with the number of
// polls they complete; ok is false once the queue is closed and empty.
func (q *queue) take() (segs []segment, upTo uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pending) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.pending) == 0 {
		return nil, 0, false
	}
	segs, q.pending, q.records = q.pending, nil, 0
	q.cond.Broadcast()
	return segs, q.submitted, true
}

// done records that the polls up to upTo are applied.
func (q *queue) done(upTo uint64) {
	q.mu.Lock()
	q.applied = upTo
	q.cond.Broadcast()
	q.mu.Unlock()
}

// barrier waits until every poll submitted so far is applied, or the applier
// is gone: a revoked partition is let go only after its last records.
func (q *queue) barrier() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for target := q.submitted; q.applied < target && !q.stopped; {
		q.cond.Wait()
	}
}

// close ends submitting; the applier still takes what is pending.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// stop says the applier is gone, releasing every waiter.
func (q *queue) stop() {
	q.mu.Lock()
	q.closed, q.stopped = true, true
	q.cond.Broadcast()
	q.mu.Unlock()
}
