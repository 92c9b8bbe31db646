package worker

import (
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// segment is one poll's records of one owned partition; or, with lost set
// and no records, the news that the partition's log lost records (handled
// once the records polled before it are applied: lostRecords); or, with
// tooLarge set and no records, a batch of the partition that decompresses
// past the bound, skipped unread by the applier, after the records polled
// before it (queueTooLarge).
type segment struct {
	p        *partition
	records  []*kgo.Record
	bytes    int // the records' keys, values and headers (detach)
	polledAt time.Time
	lost     *kgo.ErrDataLoss
	tooLarge *kgo.ErrDecompressTooLarge
}

// maxQueuedBytes bounds the bytes of the records waiting in a lane's queue
// (queue.maxBytes), beside their count (Config.MaxPollRecords). A thousand
// commands with the contract's largest fields (4,000 bytes of
// owner_metadata, 255 of lock_name and owner_id: about 5 KB each) take
// about 5 MB, so the count bounds those; this bounds larger records (256
// of 64 KiB, topics.MaxRecordBytes), and larger still, which a producer
// may send past the contract. A lane holds its batch in its transaction
// and the queue behind it, each at most this and one poll, and a poll
// waiting for room.
const maxQueuedBytes = 16 << 20

// queue hands polled records from the poll loop to an applier. The applier
// takes everything that arrived while its last transaction ran, so batches
// grow with the load instead of transactions multiplying with it.
type queue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pending []segment
	records int
	bytes   int // the pending segments' bytes
	// limit and maxBytes bound pending records and their bytes: submit
	// blocks once either is reached, which is the backpressure on
	// polling. Like the records, the bytes of one poll may pass the bound:
	// an empty queue takes any poll.
	limit, maxBytes int
	closed          bool // no more submits
	stopped         bool // the applier is gone: nothing more is taken
}

func newQueue(limit, maxBytes int) *queue {
	q := &queue{limit: limit, maxBytes: maxBytes}
	q.cond = sync.NewCond(&q.mu)
	return q
}

// submit queues one poll's segments, waiting while the queue is full, and
// releases (pending.Done) those it does not queue: all of them once the
// queue no longer takes any (false), and those of a partition dropped from
// a failing batch (see discard), also while they wait for room.
func (q *queue) submit(segs []segment) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		segs = slices.DeleteFunc(segs, func(s segment) bool {
			if s.p.dropped.Load() {
				s.p.pending.Done()
				return true
			}
			return false
		})
		if len(segs) == 0 {
			return true // nothing left to queue
		}
		if (q.records < q.limit && q.bytes < q.maxBytes) || q.closed || q.stopped {
			break
		}
		q.cond.Wait()
	}
	if q.closed || q.stopped {
		for _, s := range segs {
			s.p.pending.Done()
		}
		return false
	}
	q.pending = append(q.pending, segs...)
	for _, s := range segs {
		q.records += len(s.records)
		q.bytes += s.bytes
	}
	q.cond.Broadcast()
	return true
}

// discard releases the queued segments of p, a partition lost or dropped
// from a batch that keeps failing (Worker.drop): a revoke waits for every
// segment polled for it, and the applier would take them only after the
// batch in hand. Segments waiting to be submitted are released by submit;
// p.dropped is set before discard, so that no submit queues one after it.
func (q *queue) discard(p *partition) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.pending = slices.DeleteFunc(q.pending, func(s segment) bool {
		if s.p != p {
			return false
		}
		q.records -= len(s.records)
		q.bytes -= s.bytes
		p.pending.Done()
		return true
	})
	q.cond.Broadcast()
}

// take waits for pending segments and takes them all, up to a loss: a loss
// is taken alone; ok is false once the queue is closed and empty.
func (q *queue) take() (segs []segment, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.pending) == 0 && !q.closed {
		q.cond.Wait()
	}
	if len(q.pending) == 0 {
		return nil, false
	}
	n := slices.IndexFunc(q.pending, func(s segment) bool { return s.lost != nil })
	switch n {
	case -1:
		n = len(q.pending)
	case 0:
		n = 1
	}
	// The rest in an array of its own: q.pending[n:] would keep the taken
	// segments' array, and submit append to its free end, keeping every
	// segment taken before, and their records, as long as it has room.
	segs, q.pending = q.pending[:n:n], slices.Clone(q.pending[n:])
	for _, s := range segs {
		q.records -= len(s.records)
		q.bytes -= s.bytes
	}
	q.cond.Broadcast()
	return segs, true
}

// close ends submitting; the applier still takes what is pending.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// stop says the applier is gone, releasing every waiter, and returns the
// segments it will never take.
func (q *queue) stop() []segment {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed, q.stopped = true, true
	left := q.pending
	q.pending, q.records, q.bytes = nil, 0, 0
	q.cond.Broadcast()
	return left
}
