package outbox_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
)

// A reply topic whose creation Kafka refuses INVALID_REPLICATION_FACTOR
// (fewer brokers up than its replicas, as while one of three restarts with
// the factor 3 production wants) waits for the brokers as for Kafka away:
// its rows are retried past MaxAttempts, never counted nor parked (parked,
// the requester would get no reply for ParkFor although its lock may be
// granted), each retry's warning says why, and the reply goes once the
// brokers are there.
func TestReplyTopicWaitsForItsReplicas(t *testing.T) {
	t.Parallel()
	const reply, p, maxAttempts = "locks.replies.svc", int32(5), 2
	c := newCluster(t) // one broker: three replicas are refused until two more join
	creations := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Observe: true, Count: -1})
	st := testdb.New(t)
	pub, cl, err := outbox.NewKafkaPublisher(append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...)), time.Second, "locks.replies.", true, 3)
	require.NoError(t, err)
	t.Cleanup(cl.Close) // after the relay stops
	var logs testlog.Buffer
	var parked atomic.Int64
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.MaxAttempts = maxAttempts
		cfg.Logger = zerolog.New(&logs)
		cfg.OnParked = func(_ string, n int) { parked.Add(int64(n)) }
	})
	insert(t, st, p, rec{reply, "k", "granted", "e1"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	// A refusal parks the rows at the MaxAttempts-th: it stops the creations.
	require.Eventually(t, func() bool {
		return creations.Hits() > 2*maxAttempts || count(t, st, "parked_until IS NOT NULL") > 0
	}, 10*time.Second, 10*time.Millisecond)
	require.Zero(t, count(t, st, "parked_until IS NOT NULL OR attempts > 0"), "refused %d times, the row is parked or counted: %s",
		creations.Hits(), testlog.LastLines(logs.String(), 5))
	assert.Zero(t, parked.Load())
	t.Logf("the creation refused %d times, the row waiting", creations.Hits())
	level, reason := retryWarning(t, &logs)
	assert.Equal(t, "warn", level)
	assert.Equal(t, outbox.ReasonReplicas, reason)

	for range 2 {
		_, _, err := c.AddNode(-1, 0)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond,
		"the reply goes once three brokers are up: %s", testlog.LastLines(logs.String(), 5))
	assert.Equal(t, []string{"granted"}, values(consume(t, c.ListenAddrs(), reply, 1)))
	assert.Zero(t, parked.Load())
}

// A creation refused INVALID_PARTITIONS stays a refusal, parked after
// MaxAttempts: Kafka answers so the partition count asked for (the
// broker's num.partitions, for the relay's publisher), which no wait
// changes.
func TestInvalidPartitionsRefused(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.InvalidPartitions, Count: -1})
	pub := newPublisher(t, c.ListenAddrs(), true)
	err := pub.Publish("locks.replies.new", message.NewMessage("u", []byte("v")))
	require.ErrorIs(t, err, kerr.InvalidPartitions)
	kind, reason := outbox.Classify(err)
	assert.Equal(t, outbox.TopicRefused, kind, "%v", err)
	assert.Equal(t, "INVALID_PARTITIONS", reason)
}
