package outbox_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/outbox"
)

// keyOn returns a record key that kgo's default partitioner puts on
// partition of topic, which has n partitions.
func keyOn(t *testing.T, topic string, partition, n int32) string {
	t.Helper()
	p := kgo.StickyKeyPartitioner(nil).ForTopic(topic)
	for i := range 1000 {
		k := fmt.Sprint("key", i)
		if int32(p.Partition(&kgo.Record{Key: []byte(k)}, int(n))) == partition {
			return k
		}
	}
	t.Fatalf("no key for partition %d", partition)
	return ""
}

// endOffsets returns how many records each partition of topic holds.
func endOffsets(t *testing.T, c *kfake.Cluster, topic string) map[int32]int64 {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	require.NoError(t, err)
	defer cl.Close()
	offsets, err := kadm.NewClient(cl).ListEndOffsets(context.Background(), topic)
	require.NoError(t, err)
	out := map[int32]int64{}
	offsets.Each(func(o kadm.ListedOffset) {
		require.NoError(t, o.Err)
		out[o.Partition] = o.Offset
	})
	return out
}

// TestPartlyWrittenPublishAcknowledgesTheWrittenRows: while one Kafka
// partition of a topic has no leader, a publish of the topic's rows fails
// for those on it (Kafka away) and writes the others: those are
// acknowledged, not written again at every retry of the failed ones.
func TestPartlyWrittenPublishAcknowledgesTheWrittenRows(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.lock.state.v1", int32(7)
	c := newCluster(t, kfake.SeedTopics(2, topic))
	good, bad := keyOn(t, topic, 0, 2), keyOn(t, topic, 1, 2)
	leaderless := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{1},
		Err: kerr.NotLeaderForPartition, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, nil)
	insert(t, st, p, rec{topic, bad, "b1", ""}, rec{topic, good, "g1", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return pub.failures.Load() >= 2 }, 20*time.Second, 10*time.Millisecond,
		"the leaderless partition's row failed, then its retry")

	leaderless.Remove()
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond, "every row published")
	assert.Equal(t, map[int32]int64{0: 1, 1: 1}, endOffsets(t, c, topic), "each row written once")
}

// TestPartlyRefusedTopicCountsOnlyTheFailedRows: a publish that Kafka
// refuses for one Kafka partition of the topic (TopicRefused) and writes
// for another acknowledges the rows written; only the refused rows count
// attempts and are parked.
func TestPartlyRefusedTopicCountsOnlyTheFailedRows(t *testing.T) {
	t.Parallel()
	const topic, p = "locks.replies.partly", int32(3)
	c := newCluster(t, kfake.SeedTopics(2, topic))
	good, bad := keyOn(t, topic, 0, 2), keyOn(t, topic, 1, 2)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{1},
		Err: kerr.TopicAuthorizationFailed, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.MaxAttempts = 2 })
	insert(t, st, p, rec{topic, bad, "b1", ""}, rec{topic, good, "g1", ""}, rec{topic, good, "g2", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return count(t, st, "parked_until > now()") > 0 }, 20*time.Second, 10*time.Millisecond, "parked")

	require.Eventually(t, func() bool { return count(t, st, "true") == 1 }, 10*time.Second, 10*time.Millisecond,
		"the written rows are deleted")
	var value string
	var attempts int
	require.NoError(t, st.Pool.QueryRow(context.Background(),
		`SELECT convert_from(value, 'UTF8'), attempts FROM outbox WHERE parked_until > now()`).Scan(&value, &attempts))
	assert.Equal(t, "b1", value, "only the refused row is parked")
	assert.Equal(t, 2, attempts)
	assert.Equal(t, int64(2), endOffsets(t, c, topic)[0], "the written rows written once")
}

// TestRowWrittenAfterItsKeyFailedIsPublishedAgain: kgo fails every batch
// it holds for a Kafka partition after a failed one, but a record of the
// same call that enters its buffer only after that (here the buffer holds
// one record) is written after the failed one. It is not acknowledged as
// written: once the failed row lands, it is written again after it, so the
// key's last record is its last row, the state compaction keeps. Both when
// Kafka is away (INVALID_TIMESTAMP) and when the broker refuses the batch
// (MESSAGE_TOO_LARGE: the failed row goes again alone, and is taken).
func TestRowWrittenAfterItsKeyFailedIsPublishedAgain(t *testing.T) {
	t.Parallel()
	for i, fault := range []*kerr.Error{kerr.InvalidTimestamp, kerr.MessageTooLarge} {
		t.Run(fault.Message, func(t *testing.T) {
			t.Parallel()
			const topic = "locks.lock.state.v1"
			p := int32(5 + i)
			c := newCluster(t, kfake.SeedTopics(1, topic))
			var produces atomic.Int32
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: fault,
				When: func(kmsg.Request) bool { return produces.Add(1) == 2 }})
			st := testdb.New(t)
			pub := newPublisher(t, c.ListenAddrs(), false, kgo.MaxBufferedRecords(1))
			relay := newRelay(t, st, pub, nil)
			insert(t, st, p, rec{topic, "k", "s1", ""}, rec{topic, "k", "s2", ""}, rec{topic, "k", "s3", ""})
			start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
			require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond, "every row published")

			got := values(consume(t, c.ListenAddrs(), topic, int(endOffsets(t, c, topic)[0])))
			require.NotEqual(t, []string{"s1", "s2", "s3"}, firstSeen(got), "a row was written after its key's earlier row failed: %v", got)
			assert.Equal(t, "s3", got[len(got)-1], "the key's last record: %v", got)
		})
	}
}
