package worker

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// segs is one poll's segment of n records, counted as pending.
func segs(n int) []segment { return segsOf(&partition{}, n) }

func segsOf(p *partition, n int) []segment {
	p.pending.Add(1)
	return []segment{{p: p, records: make([]*kgo.Record, n)}}
}

// What arrives while the applier works is taken at once, as one batch.
func TestQueueMergesPolls(t *testing.T) {
	q := newQueue(100, maxQueuedBytes)
	require.True(t, q.submit(segs(3)))
	require.True(t, q.submit(segs(4)))
	got, ok := q.take()
	require.True(t, ok)
	require.Len(t, got, 2)
}

// A loss reported for a partition is taken alone, between what came before
// and after it, so the applier handles it between those records; the
// records taken leave room for more.
func TestQueueTakesALossAlone(t *testing.T) {
	q := newQueue(10, maxQueuedBytes)
	lost := segment{p: &partition{}, lost: &kgo.ErrDataLoss{}}
	lost.p.pending.Add(1)
	require.True(t, q.submit(append(segs(3), lost)))
	require.True(t, q.submit(segs(4)))
	for _, want := range [][]int{{3}, {-1}, {4}} {
		got, ok := q.take()
		require.True(t, ok)
		require.Len(t, got, len(want))
		if want[0] < 0 {
			require.NotNil(t, got[0].lost)
		} else {
			require.Len(t, got[0].records, want[0])
		}
	}
	require.Zero(t, q.records)
}

// submitWaits submits s to q in a goroutine, requires the submit to wait
// for room (it has not returned 20 ms later), and returns a channel closed
// once it returns.
func submitWaits(t *testing.T, q *queue, s []segment) <-chan struct{} {
	t.Helper()
	submitted := make(chan struct{})
	go func() { q.submit(s); close(submitted) }()
	select {
	case <-submitted:
		t.Fatal("submit did not wait for room")
	case <-time.After(20 * time.Millisecond):
	}
	return submitted
}

// submit blocks while the queue holds limit records, until the applier
// takes them.
func TestQueueBackpressure(t *testing.T) {
	q := newQueue(5, maxQueuedBytes)
	q.submit(segs(5))
	submitted := submitWaits(t, q, segs(1))
	_, ok := q.take()
	require.True(t, ok)
	<-submitted
}

// submit blocks too while the queue holds maxBytes of records, however few
// they are; a poll past the bound is still taken by an empty queue.
func TestQueueBoundsBytes(t *testing.T) {
	q := newQueue(100, 10)
	big := segs(1)
	big[0].bytes = 15
	require.True(t, q.submit(big), "an empty queue takes any poll")
	small := segs(1)
	small[0].bytes = 1
	submitted := submitWaits(t, q, small)
	got, ok := q.take()
	require.True(t, ok)
	require.Equal(t, 15, got[0].bytes)
	<-submitted
	require.Equal(t, 1, q.bytes)
}

// What the applier took is not kept by the queue: its records are freed
// once the applier lets go of them, while the queue fills again.
func TestQueueLetsGoOfWhatItGave(t *testing.T) {
	q := newQueue(100, maxQueuedBytes)
	freed := make(chan struct{})
	func() {
		r := &kgo.Record{}
		runtime.AddCleanup(r, func(c chan struct{}) { close(c) }, freed)
		first := segs(1)
		first[0].records[0] = r
		require.True(t, q.submit(first))
		require.True(t, q.submit(segs(1)))
		require.True(t, q.submit(segs(1))) // the queue's array has room left now
		got, ok := q.take()
		require.True(t, ok)
		require.Same(t, r, got[0].records[0])
	}()
	require.True(t, q.submit(segs(1)))
	deadline := time.After(5 * time.Second)
	for done := false; !done; {
		runtime.GC()
		select {
		case <-freed:
			done = true
		case <-deadline:
			t.Fatal("the record taken is still reachable from the queue")
		case <-time.After(10 * time.Millisecond):
		}
	}
	runtime.KeepAlive(q)
}

// After close the applier takes what is pending, then ends.
func TestQueueCloseDrains(t *testing.T) {
	q := newQueue(100, maxQueuedBytes)
	q.submit(segs(1))
	q.close()
	require.False(t, q.submit(segs(1)), "closed: not taken")
	_, ok := q.take()
	require.True(t, ok)
	_, ok = q.take()
	require.False(t, ok)
}

// Once the applier is gone, a blocked submit returns and what was pending
// is handed back, so its partitions' pending counts can be released.
func TestQueueStopReleasesSubmitters(t *testing.T) {
	q := newQueue(1, maxQueuedBytes)
	q.submit(segs(1))
	released := make(chan bool)
	go func() { released <- q.submit(segs(1)) }()
	left := q.stop()
	require.False(t, <-released)
	require.Len(t, left, 1)
}

// A partition dropped from a failing batch lets go of its segments, queued
// or waiting for room, so its revoke does not wait for that batch; other
// partitions' stay.
func TestQueueDiscardReleasesADroppedPartition(t *testing.T) {
	q := newQueue(2, maxQueuedBytes)
	p, other := &partition{}, &partition{}
	require.True(t, q.submit(segsOf(p, 1)))
	require.True(t, q.submit(segsOf(other, 1))) // full
	waiting := segsOf(p, 1)
	submitted := make(chan struct{})
	go func() { q.submit(waiting); close(submitted) }()
	p.dropped.Store(true)
	q.discard(p)
	p.pending.Wait() // the queued one and the waiting one, released
	<-submitted
	got, ok := q.take()
	require.True(t, ok)
	require.Len(t, got, 1)
	require.Same(t, other, got[0].p)
}
