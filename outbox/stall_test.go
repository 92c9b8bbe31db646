package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/outbox"
)

// TestFirstFailureHoldsNoOtherTopic: a topic whose Kafka partition answers
// NOT_LEADER from its first publish on, which kgo retries up to its delivery
// timeout (30 s, as lockworker's), does not hold the other topic of the
// pass: its row is acknowledged while the failing topic's record is still
// outstanding, and so are the other topic's rows read and handed over
// meanwhile. The failing topic's rows wait, none published before the
// first, until its leader is back; then all go, in order.
func TestFirstFailureHoldsNoOtherTopic(t *testing.T) {
	t.Parallel()
	const bad, good, p = "locks.replies.leaderless", "locks.replies.healthy", int32(4)
	c := newCluster(t, kfake.SeedTopics(1, bad, good))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.NotLeaderForPartition, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false, kgo.RecordDeliveryTimeout(30*time.Second))
	var published atomic.Int64 // rows the relay acknowledged
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.OnPublished = func(n int, _ time.Duration) { published.Add(int64(n)) }
		cfg.PublishTimeout = 35 * time.Second
		cfg.HandOverWait = -1 // nothing is left behind once the leader is back
	})
	insert(t, st, p, rec{bad, "k", "x1", ""}, rec{good, "k", "y1", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	// outstanding says the bad topic's records have no outcome yet: none
	// failed (kgo fails them at the delivery timeout), none acknowledged.
	outstanding := func() bool {
		return pub.failures.Load() == 0 && !slices.ContainsFunc(pub.acked(), func(a string) bool { return strings.HasPrefix(a, bad+"/") })
	}
	require.Eventually(t, func() bool { return published.Load() == 1 }, 10*time.Second, 5*time.Millisecond,
		"the healthy topic's row, published with the failing topic's first record")
	require.True(t, outstanding(), "acknowledged while the failing record is outstanding: %v", pub.acked())
	require.Equal(t, []string{good + "/y1"}, pub.acked())
	require.Positive(t, fault.Hits(), "the failing topic's record was sent and refused")

	// Rows read and handed over meanwhile: the healthy topic's go, the
	// failing topic's wait behind its first.
	insert(t, st, p, rec{good, "k", "y2", ""}, rec{bad, "k", "x2", ""})
	relay.Wake(p)
	s := relay.Reserve(p)
	require.NotNil(t, s)
	s.Fill(write(t, st, p, rec{good, "k", "y3", ""}, rec{bad, "k", "x3", ""}))
	require.Eventually(t, func() bool { return published.Load() == 3 }, 10*time.Second, 5*time.Millisecond,
		"the healthy topic's rows while the failing one waits: %v", pub.acked())
	require.True(t, outstanding(), "the failing record still outstanding: %v", pub.acked())
	assert.Equal(t, []string{good + "/y1", good + "/y2", good + "/y3"}, pub.acked())

	fault.Remove()
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond, "every row published")
	assert.Zero(t, pub.failures.Load(), "kgo wrote the held record once the leader was back")
	assert.Equal(t, []string{"x1", "x2", "x3"}, firstSeen(values(consume(t, c.ListenAddrs(), bad, 3))), "the failing topic's rows in order")
}

// TestLoneFirstFailureHoldsNoOtherTopic: a pass of the failing topic
// alone (a command answered by one reply row) becomes a probe too, so the
// rows of another topic committed after it go while its record is held.
func TestLoneFirstFailureHoldsNoOtherTopic(t *testing.T) {
	t.Parallel()
	const bad, good, p = "locks.replies.leaderless", "locks.replies.healthy", int32(4)
	c := newCluster(t, kfake.SeedTopics(1, bad, good))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.NotLeaderForPartition, Count: -1})
	st := testdb.New(t)
	pub := newPublisher(t, c.ListenAddrs(), false, kgo.RecordDeliveryTimeout(30*time.Second))
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) { cfg.PublishTimeout = 35 * time.Second })
	insert(t, st, p, rec{bad, "k", "x1", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return fault.Hits() > 0 }, 10*time.Second, 5*time.Millisecond, "the lone record sent")

	insert(t, st, p, rec{good, "k", "y1", ""})
	relay.Wake(p)
	require.Eventually(t, func() bool { return len(pub.acked()) == 1 }, 10*time.Second, 5*time.Millisecond,
		"the other topic's row while the lone one is held")
	require.Equal(t, []string{good + "/y1"}, pub.acked())
	require.Zero(t, pub.failures.Load(), "the held record is still outstanding")
	fault.Remove()
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond, "every row published")
}

// topicCalls counts the publishing calls of several topics that name topic.
type topicCalls struct {
	*recorder
	topic string
	n     atomic.Int64
}

func (c *topicCalls) PublishTopicsEach(done func(i int, err error), batches ...kafkapubsub.TopicMessages) {
	if slices.ContainsFunc(batches, func(b kafkapubsub.TopicMessages) bool { return b.Topic == c.topic }) {
		c.n.Add(1)
	}
	c.recorder.PublishTopicsEach(done, batches...)
}

// TestProbedTopicWaitsInTheRestOfAHandOff: rows handed over go a few
// batches at a time; a topic whose publish became a probe in one batch
// keeps its rows of the later batches in the table, behind the probe's,
// rather than publish them while the probe's are outstanding.
func TestProbedTopicWaitsInTheRestOfAHandOff(t *testing.T) {
	t.Parallel()
	const bad, good, p = "locks.replies.leaderless", "locks.replies.healthy", int32(5)
	c := newCluster(t, kfake.SeedTopics(1, bad, good))
	st := testdb.New(t)
	pub := &topicCalls{recorder: newPublisher(t, c.ListenAddrs(), false, kgo.RecordDeliveryTimeout(30*time.Second)), topic: bad}
	var published atomic.Int64
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.OnPublished = func(n int, _ time.Duration) { published.Add(int64(n)) }
		cfg.BatchSize = 1 // a hand-off goes 10 rows a publish
		cfg.PollInterval = time.Hour
		cfg.PublishTimeout = 35 * time.Second
		cfg.HandOverWait = -1
		outbox.NoTakeoverReads(cfg)
	})
	insert(t, st, p, rec{good, "k", "w0", ""})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })
	require.Eventually(t, func() bool { return published.Load() == 1 }, 10*time.Second, 5*time.Millisecond, "the first read's row")

	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.NotLeaderForPartition, Count: -1})
	rows := []rec{{bad, "k", "x1", ""}}
	for i := 1; i <= 9; i++ {
		rows = append(rows, rec{good, "k", fmt.Sprint("y", i), ""})
	}
	rows = append(rows, rec{bad, "k", "x2", ""}, rec{good, "k", "y10", ""}) // the second publish's
	s := relay.Reserve(p)
	require.NotNil(t, s)
	s.Fill(write(t, st, p, rows...))
	require.Eventually(t, func() bool { return published.Load() == 11 }, 10*time.Second, 5*time.Millisecond,
		"the healthy topic's rows of both publishes: %v", pub.acked())
	assert.Equal(t, int64(1), pub.n.Load(), "the failing topic's second row was published while its first is outstanding")
	assert.Zero(t, pub.failures.Load(), "the failing topic's record is outstanding")

	fault.Remove()
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 5*time.Millisecond, "every row published")
	assert.Equal(t, []string{"x1", "x2"}, firstSeen(values(consume(t, c.ListenAddrs(), bad, 2))), "the failing topic's rows in order")
}
