package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/outbox"
)

// The relay's publisher creates a missing reply topic with the replication
// factor asked for (KAFKA_TOPIC_REPLICATION_FACTOR): -1 is the broker's
// default; and with one partition, whatever the broker's num.partitions
// (kfake's and devkafka's: 10).
func TestKafkaPublisherCreatesReplyTopicsReplicated(t *testing.T) {
	for _, tc := range []struct {
		name     string
		factor   int16
		replicas int
	}{
		{name: "broker's default", factor: -1, replicas: 3}, // kfake's default: min(3, brokers)
		{name: "two", factor: 2, replicas: 2},
		{name: "one", factor: 1, replicas: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c := newCluster(t, kfake.NumBrokers(3))
			asked := kafkatest.ReplicationFactorsAsked(c)
			kopts := append(clientOpts(), kgo.SeedBrokers(c.ListenAddrs()...))
			pub, cl, err := outbox.NewKafkaPublisher(kopts, 5*time.Second, "locks.replies.", true, tc.factor)
			require.NoError(t, err)
			defer cl.Close()
			defer pub.Close()

			const topic = "locks.replies.svc"
			require.NoError(t, pub.Publish(topic, message.NewMessage("1", []byte("x"))))

			require.Equal(t, map[string]int16{topic: tc.factor}, asked())
			listed, err := kadm.NewClient(cl).ListTopics(ctx, topic)
			require.NoError(t, err)
			require.Len(t, listed[topic].Partitions, 1)
			for _, p := range listed[topic].Partitions {
				require.Len(t, p.Replicas, tc.replicas)
			}
		})
	}
}

// The relay's publisher refuses a partitioner of the caller's: lock state
// readers look for a key's records in the partition it hashes to only.
func TestKafkaPublisherRefusesAPartitioner(t *testing.T) {
	_, _, err := outbox.NewKafkaPublisher([]kgo.Opt{kgo.SeedBrokers("127.0.0.1:1"), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil))}, time.Second, "", false, -1)
	require.ErrorContains(t, err, "kgo.RecordPartitioner")
}
