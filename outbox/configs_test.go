package outbox_test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkalog"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/outbox"
)

// A Kafka whose policy refuses topic configs (POLICY_VIOLATION or
// INVALID_CONFIG for the min.insync.replicas=2 of a factor of 3) gets the
// relay's reply topic asked again without them, as the SDK's own: the
// replies go, nothing is parked, and the Kafka client's log says so once.
func TestReplyTopicConfigsRefused(t *testing.T) {
	t.Parallel()
	for _, refusal := range []*kerr.Error{kerr.PolicyViolation, kerr.InvalidConfig} {
		t.Run(refusal.Message, func(t *testing.T) {
			t.Parallel()
			const reply, p = "locks.replies.fixed", int32(11)
			c := newCluster(t, kfake.NumBrokers(3))
			asked := kafkatest.RefuseTopicConfigs(c, refusal.Code, func(string) bool { return true })
			st := testdb.New(t)
			var kafkaLogs testlog.Buffer
			kopts := append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...),
				kgo.WithLogger(kafkalog.Client(zerolog.New(&kafkaLogs).Level(zerolog.WarnLevel))))
			pub, cl, err := outbox.NewKafkaPublisher(kopts, time.Second, "locks.replies.", true, 3)
			require.NoError(t, err)
			t.Cleanup(cl.Close) // after the relay stops
			var parked atomic.Int64
			relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
				cfg.MaxAttempts = 2
				cfg.OnParked = func(_ string, n int) { parked.Add(int64(n)) }
			})
			insert(t, st, p, rec{reply, "k", "r1", "e1"}, rec{reply, "k", "r2", "e2"})
			start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

			require.Eventually(t, func() bool { return count(t, st, "true") == 0 }, 10*time.Second, 10*time.Millisecond,
				"the replies go: %s", testlog.LastLines(kafkaLogs.String(), 5))
			assert.Equal(t, []string{"r1", "r2"}, values(consume(t, c.ListenAddrs(), reply, 2)))
			assert.Zero(t, parked.Load())
			assert.Len(t, asked()[reply], 2, "asked with its configs once, then without")

			var warnings []map[string]any
			for _, line := range strings.Split(strings.TrimSpace(kafkaLogs.String()), "\n") {
				var w map[string]any
				require.NoError(t, json.Unmarshal([]byte(line), &w), line)
				if strings.HasPrefix(w["message"].(string), "the broker refused") {
					warnings = append(warnings, w)
				}
			}
			require.Len(t, warnings, 1, "said once: %s", kafkaLogs.String())
			assert.Equal(t, "warn", warnings[0]["level"])
			assert.Equal(t, "the broker refused the topic's configs min.insync.replicas=2; asked again without them, to have the broker's", warnings[0]["message"])
			assert.Equal(t, reply, warnings[0]["topic"])
			assert.Contains(t, warnings[0]["err"], refusal.Message)

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			adm := kadm.NewClient(cl)
			listed, err := adm.ListTopics(ctx, reply)
			require.NoError(t, err)
			require.NotEmpty(t, listed[reply].Partitions)
			for _, part := range listed[reply].Partitions {
				require.Len(t, part.Replicas, 3, "partition %d", part.Partition)
			}
			assert.Equal(t, "1", kafkatest.TopicConfigs(t, ctx, adm, reply)["min.insync.replicas"], "the broker's")
		})
	}
}

// A reply topic whose creation Kafka refuses INVALID_CONFIG even without
// the configs asked is a refusal like any other: its row is counted and
// parked after MaxAttempts, which /health counts, rather than retried as
// when Kafka is away for ever.
func TestConfigRefusalParks(t *testing.T) {
	t.Parallel()
	const reply, p, maxAttempts = "locks.replies.refused", int32(12), 2
	c := newCluster(t, kfake.NumBrokers(3))
	creations := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.InvalidConfig, Count: -1})
	st := testdb.New(t)
	pub, cl, err := outbox.NewKafkaPublisher(append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...)), time.Second, "locks.replies.", true, 3)
	require.NoError(t, err)
	t.Cleanup(cl.Close) // after the relay stops
	parks := make(chan string, 10)
	relay := newRelay(t, st, pub, func(cfg *outbox.Config) {
		cfg.MaxAttempts = maxAttempts
		cfg.OnParked = func(reason string, n int) {
			for range n {
				parks <- reason
			}
		}
	})
	insert(t, st, p, rec{reply, "k", "granted", "e1"})
	start(t, func(ctx context.Context) error { return relay.Run(ctx, p) })

	select {
	case reason := <-parks:
		assert.Equal(t, "INVALID_CONFIG", reason)
	case <-time.After(30 * time.Second):
		t.Fatalf("the row was never parked; the creation was refused %d times", creations.Hits())
	}
	assert.Equal(t, 1, count(t, st, "parked_until > now() AND park_reason = 'INVALID_CONFIG' AND attempts = $1", maxAttempts))
	n, err := outbox.Parked(context.Background(), st.Pool)
	require.NoError(t, err)
	assert.EqualValues(t, 1, n, "/health's count")
}
