package outbox_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
// its rows are retried past MaxAttempts, neither counted nor parked within
// ParkFor (parked, the requester would get no reply for ParkFor although
// its lock may be granted), each retry's warning says why, and the reply
// goes once the brokers are there.
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

// A topic whose creation is refused INVALID_REPLICATION_FACTOR on end for
// as long as a park lasts (ParkFor) has a factor above the brokers the
// cluster has, not one restarting: its rows are parked with that reason,
// so that /health counts them and its creation is not tried while the
// park lasts (when it ends, it is retried with backoff for another ParkFor
// before the next park).
func TestLastingReplicasRefusalParks(t *testing.T) {
	t.Parallel()
	const reply, p, parkFor = "locks.replies.misconfigured", int32(7), 2 * time.Second
	c := newCluster(t) // one broker, for good
	st := testdb.New(t)
	pub, cl, err := outbox.NewKafkaPublisher(append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...)), time.Second, "locks.replies.", true, 3)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	type park struct {
		reason string
		rows   int
		after  time.Duration
	}
	parks := make(chan park, 10)
	inserted := time.Now()
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.ParkFor = parkFor
		cfg.OnParked = func(reason string, n int) { parks <- park{reason, n, time.Since(inserted)} }
	})
	insert(t, st, p, rec{reply, "k", "granted", "e1"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	select {
	case got := <-parks:
		assert.Equal(t, "INVALID_REPLICATION_FACTOR", got.reason)
		assert.Equal(t, 1, got.rows)
		assert.GreaterOrEqual(t, got.after, parkFor, "refused so for a park's time first")
	case <-time.After(10 * parkFor):
		t.Fatal("the topic refused for its replicas on end was never parked")
	}
	assert.Equal(t, 1, count(t, st, "parked_until > now() AND park_reason = 'INVALID_REPLICATION_FACTOR' AND attempts = 0"))
	n, err := outbox.Parked(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "/health's count")
}

// A creation refused INVALID_PARTITIONS, INVALID_CONFIG,
// INVALID_REPLICA_ASSIGNMENT, INVALID_REQUEST or POLICY_VIOLATION stays a
// refusal, parked after MaxAttempts: Kafka answers so the partition count
// asked for (the broker's num.partitions, for the relay's publisher), the
// topic's configs (even without those asked: kafkapubsub.CreateTopics), or
// the request, none of which a wait changes.
func TestCreationRefusals(t *testing.T) {
	t.Parallel()
	for _, refusal := range []*kerr.Error{kerr.InvalidPartitions, kerr.InvalidConfig, kerr.InvalidReplicaAssignment, kerr.InvalidRequest, kerr.PolicyViolation} {
		t.Run(refusal.Message, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: refusal, Count: -1})
			pub := newPublisher(t, c.ListenAddrs(), true)
			err := pub.Publish("locks.replies.new", message.NewMessage("u", []byte("v")))
			require.ErrorIs(t, err, refusal)
			kind, reason := outbox.Classify(err)
			assert.Equal(t, outbox.TopicRefused, kind, "%v", err)
			assert.Equal(t, refusal.Message, reason)
		})
	}
}

// Reply topics whose creation Kafka refuses INVALID_REPLICATION_FACTOR,
// however many, never pause the partition: Kafka answered, so each waits
// alone, as a topic failing beside an acknowledgement does. New requesters'
// reply topics keep failing so while the replies to a topic that exists go
// at once; a pause (two topics failing for Kafka away, no ack between)
// would hold them RetryBase, then longer, up to RetryMax.
func TestReplicasRefusalsPauseNothing(t *testing.T) {
	t.Parallel()
	const existing, p, retryBase = "locks.replies.old", int32(6), time.Second
	c := newCluster(t, kfake.SeedTopics(1, existing)) // one broker: three replicas are refused
	st := testdb.New(t)
	kpub, cl, err := outbox.NewKafkaPublisher(append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...)), time.Second, "locks.replies.", true, 3)
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	pub := &recorder{Publisher: kpub}
	var logs testlog.Buffer
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.RetryBase, cfg.RetryMax = retryBase, 5*time.Second
		cfg.Logger = zerolog.New(&logs)
	})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	refused := func(topic string) bool { // a retry was logged for it
		return slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(l string) bool {
			return strings.Contains(l, "Kafka did not take the records") && strings.Contains(l, `"topic":"`+topic+`"`)
		})
	}
	var worst time.Duration
	for i := range 3 {
		// Two new requesters at once: their topics fail in one pass, no
		// other topic acknowledged.
		a, b := fmt.Sprintf("locks.replies.new%da", i), fmt.Sprintf("locks.replies.new%db", i)
		insert(t, st, p, rec{a, "k", "v", ""}, rec{b, "k", "v", ""})
		require.Eventually(t, func() bool { return refused(a) && refused(b) }, 10*time.Second, 10*time.Millisecond,
			"%s", testlog.LastLines(logs.String(), 5))
		at := time.Now()
		v := fmt.Sprint("reply", i)
		insert(t, st, p, rec{existing, "k", v, ""})
		relay.Wake(p)
		require.Eventually(t, func() bool { return slices.Contains(pub.acked(), existing+"/"+v) }, 20*time.Second, time.Millisecond)
		worst = max(worst, time.Since(at))
	}
	t.Logf("the existing topic's replies took %v at most", worst)
	assert.Zero(t, strings.Count(logs.String(), "pausing the partition"), "partition pauses")
	assert.Less(t, worst, retryBase/2, "no reply waits out a pause")
}
