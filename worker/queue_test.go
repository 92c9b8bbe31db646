package worker

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

func seg(n int) []segment { return []segment{{records: make([]*kgo.Record, n)}} }

// What arrives while the applier works is taken at once, as one batch.
func TestQueueMergesPolls(t *testing.T) {
	q := newQueue(100)
	q.submit(seg(3))
	q.submit(seg(4))
	segs, upTo, ok := q.take()
	require.True(t, ok)
	require.Len(t, segs, 2)
	require.EqualValues(t, 2, upTo)
}

// submit blocks while the queue holds limit records, until the applier
// takes them.
func TestQueueBackpressure(t *testing.T) {
	q := newQueue(5)
	q.submit(seg(5))
	submitted := make(chan struct{})
	go func() { q.submit(seg(1)); close(submitted) }()
	select {
	case <-submitted:
		t.Fatal("submit did not wait for room")
	case <-time.After(20 * time.Millisecond):
	}
	_, _, ok := q.take()
	require.True(t, ok)
	<-submitted
}

// barrier returns once everything submitted before it is applied.
func TestQueueBarrier(t *testing.T) {
	q := newQueue(100)
	q.submit(seg(1))
	passed := make(chan struct{})
	go func() { q.barrier(); close(passed) }()
	_, upTo, _ := q.take()
	select {
	case <-passed:
		t.Fatal("barrier passed before the poll was applied")
	case <-time.After(20 * time.Millisecond):
	}
	q.done(upTo)
	<-passed
}

// Once the applier is gone, nothing waits on it.
func TestQueueStopReleasesWaiters(t *testing.T) {
	q := newQueue(1)
	q.submit(seg(1))
	released := make(chan struct{}, 2)
	go func() { q.barrier(); released <- struct{}{} }()
	go func() { q.submit(seg(1)); released <- struct{}{} }()
	q.stop()
	<-released
	<-released
	// Closed and empty after the pending poll is taken: the applier ends.
	_, _, ok := q.take()
	require.True(t, ok)
	_, _, ok = q.take()
	require.False(t, ok)
}
