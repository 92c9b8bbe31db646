package client

import (
	"context"
	"math"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
)

// SetFetchErrorGrace sets, for the watches test t starts, how long a
// failure streak of their reading lasts before OnFetchError is told of it,
// so that the tests need not wait the 5 s of fetchErrorGrace. The tests of
// package client_test use it too.
func SetFetchErrorGrace(t testing.TB, d time.Duration) {
	old := fetchErrorGrace
	fetchErrorGrace = d
	t.Cleanup(func() { fetchErrorGrace = old })
}

// A failed dial to a broker that does not serve the followed partition (a
// dead seed, another broker kgo asks for metadata) does not replace a
// streak's latest failure, nor does one while the leader is not known,
// which only fills it when the streak has none; a failure of the leader
// does replace it.
func TestFetchErrorsLatestFailure(t *testing.T) {
	leader := int32(1)
	f := &fetchErrors{leader: func() int32 { return leader }}
	dial := func(node int32) {
		f.OnBrokerConnect(kgo.BrokerMetadata{NodeID: node, Host: "127.0.0.1", Port: 9092}, 0, nil, syscall.ECONNREFUSED)
	}
	latest := func() error {
		f.mu.Lock()
		defer f.mu.Unlock()
		return f.latest
	}

	dial(2)
	dial(math.MinInt32) // a seed
	require.True(t, f.since.IsZero(), "no streak")

	f.failedReading(kerr.TopicAuthorizationFailed, false)
	since := f.since
	dial(2)
	dial(math.MinInt32)
	require.Equal(t, kerr.TopicAuthorizationFailed, latest(), "not replaced")
	f.fetched()
	leader = -1
	dial(2)
	require.Equal(t, kerr.TopicAuthorizationFailed, latest(), "not replaced while the leader is not known")
	require.Zero(t, f.oks, "but a failure signal")
	require.Equal(t, since, f.since, "of the same streak")
	leader = 1
	dial(1)
	require.ErrorIs(t, latest(), syscall.ECONNREFUSED, "the leader's failure replaces it")
	require.ErrorContains(t, latest(), "connecting to broker 127.0.0.1:9092")

	f.readAgain()
	leader = -1
	dial(2)
	require.False(t, f.since.IsZero(), "a streak begins while the leader is not known")
	require.ErrorIs(t, latest(), syscall.ECONNREFUSED, "its dial error filling latest")
	f.failedReading(kerr.UnknownTopicOrPartition, false)
	require.Equal(t, kerr.UnknownTopicOrPartition, latest(), "a partition's error replaces it")
}

// Two successful Fetch round trips in a row during a streak (the hook
// runs before a response is buffered: the second may carry the
// partition's error still) end it only once a poll after them got no
// error: refused fetches go on being told as one streak, without a nil.
func TestFetchedTwiceDoesNotEndAStreakAlone(t *testing.T) {
	SetFetchErrorGrace(t, 300*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cluster, _ := kafkatest.StateTopic(t, 1)
	c, err := New(ctx, Config{Brokers: cluster.ListenAddrs(), ReadOnly: true})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	r, err := c.readState(ctx, func(int) []int32 { return []int32{0} })
	require.NoError(t, err)
	defer r.cons.Close()
	var mu sync.Mutex
	var told []error
	r.follow(func(err error) {
		mu.Lock()
		defer mu.Unlock()
		told = append(told, err)
	})
	toldN := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(told)
	}
	refused := cluster.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Fetch}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	defer refused.Remove()
	polling := make(chan struct{})
	go func() {
		defer close(polling)
		for ctx.Err() == nil {
			_, _ = r.poll(ctx, func(*kgo.Record, bool) {})
		}
	}()
	require.Eventually(t, func() bool { return toldN() == 1 }, 20*time.Second, 10*time.Millisecond, "the refusal told")
	for range 5 {
		// As if two Fetches succeeded, the refused ones still buffered.
		r.failed.fetched()
		r.failed.fetched()
		time.Sleep(time.Second)
	}
	cancel()
	<-polling
	require.Equal(t, 1, toldN(), "told once, no end: %v", told)
	require.ErrorIs(t, told[0], ErrForbidden)
}

// SetPartitionCheck sets, for the watches test t starts, how often they
// look up the state topic's partition count.
func SetPartitionCheck(t testing.TB, d time.Duration) {
	old := partitionCheckInterval
	partitionCheckInterval = d
	t.Cleanup(func() { partitionCheckInterval = old })
}

// A reader keeps the revision and changed_at of a lock's last keptTaken
// records, no more: after a tombstone their copies are dropped however
// they were stamped, and any other record is the lock's next life, a copy
// of an older record of the ended life too.
func TestTakenKeepsTheLastRecords(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(rev int64, at int) LockRevision {
		return LockRevision{Revision: rev, ChangedAt: t0.Add(time.Duration(at) * time.Second)}
	}
	var took taken
	const n = keptTaken + 1
	for rev := int64(1); rev <= n; rev++ {
		require.True(t, took.take(rec(rev, int(rev))))
	}
	require.Len(t, took.recent, keptTaken)
	took.deleted()
	for rev := int64(2); rev <= n; rev++ {
		require.False(t, took.take(rec(rev, int(rev))), "a copy of revision %d", rev)
	}
	require.True(t, took.take(rec(1, 1)), "revision 1's identity is no longer kept")
	require.Len(t, took.recent, keptTaken)
}
