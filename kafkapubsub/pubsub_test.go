package kafkapubsub_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
)

// suitePartitions is the partition count of the suite's topics: more than
// one, so that unkeyed messages spread and groups really share partitions.
const suitePartitions = 4

// newCluster starts an in-process broker that lives as long as the test.
func newCluster(t *testing.T) *kfake.Cluster {
	t.Helper()
	return kafkatest.Cluster(t)
}

// testClientOpts makes group joins, rebalances and the discovery of new
// topics take milliseconds instead of seconds. The session timeout is the
// least Apache Kafka accepts by default (group.min.session.timeout.ms), as
// is kfake's: it only bounds how long a member that vanished without
// leaving is waited for, which no test here does.
func testClientOpts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SessionTimeout(6 * time.Second),
		kgo.HeartbeatInterval(100 * time.Millisecond),
		kgo.RebalanceTimeout(5 * time.Second),
		kgo.MetadataMinAge(50 * time.Millisecond),
		kgo.FetchMaxWait(500 * time.Millisecond),
	}
}

// pubSubFactory builds publisher/subscriber pairs on one cluster. group
// maps the calling test to a consumer group; "" is fan-out mode.
func pubSubFactory(c *kfake.Cluster, partitions int32, group func(t *testing.T) string) tests.ConsumerGroupPubSubConstructor {
	return func(t *testing.T, consumerGroup string) (message.Publisher, message.Subscriber) {
		t.Helper()
		if consumerGroup == "" && group != nil {
			consumerGroup = group(t)
		}
		logger := watermill.NopLogger{}
		pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
			Brokers:          c.ListenAddrs(),
			ClientOpts:       testClientOpts(),
			AutoCreateTopics: true,
			TopicPartitions:  partitions,
		}, logger)
		require.NoError(t, err)
		sub, err := kafkapubsub.NewSubscriber(kafkapubsub.SubscriberConfig{
			Brokers:             c.ListenAddrs(),
			ClientOpts:          testClientOpts(),
			ConsumerGroup:       consumerGroup,
			NackRedeliveryDelay: 5 * time.Millisecond,
			TopicPartitions:     partitions,
		}, logger)
		require.NoError(t, err)
		return pub, sub
	}
}

// groupPerTest gives every suite test its own consumer group: the suite
// calls the constructor with the test's t, and tests run in parallel on
// different topics, where one shared group would rebalance across all of
// them.
func groupPerTest(t *testing.T) string {
	return "cg-" + strings.ReplaceAll(t.Name(), "/", "-")
}

func withoutGroup(ctor tests.ConsumerGroupPubSubConstructor) tests.PubSubConstructor {
	return func(t *testing.T) (message.Publisher, message.Subscriber) { return ctor(t, "") }
}

// TestPubSub runs watermill's universal suite with consumer-group
// subscriptions.
func TestPubSub(t *testing.T) {
	c := newCluster(t)
	ctor := pubSubFactory(c, suitePartitions, groupPerTest)
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups: true,
		// At least once: redelivery after Nack, rebalance or restart.
		ExactlyOnceDelivery: false,
		// Order holds per partition only and the suite publishes unkeyed
		// messages over several partitions; TestOrderOnePartition checks
		// the per-partition order.
		GuaranteedOrder: false,
		// Records and committed offsets outlive subscribers.
		Persistent: true,
		// A new member of a group continues from the group's offsets rather
		// than rereading the topic; TestPubSubFanOut covers rereading.
		NewSubscriberReceivesOldMessages: false,
		// kfake cannot be restarted from outside.
		RestartServiceCommand: nil,
	}, withoutGroup(ctor), ctor)
}

// TestPubSubFanOut runs the suite with subscriptions that read the whole
// topic themselves, without a group.
func TestPubSubFanOut(t *testing.T) {
	c := newCluster(t)
	ctor := pubSubFactory(c, suitePartitions, nil)
	groupCtor := pubSubFactory(c, suitePartitions, groupPerTest)
	tests.TestPubSub(t, tests.Features{
		ConsumerGroups:      true, // groupCtor, as in TestPubSub
		ExactlyOnceDelivery: false,
		GuaranteedOrder:     false, // as in TestPubSub
		Persistent:          true,
		// Every fan-out subscription starts at the earliest record.
		NewSubscriberReceivesOldMessages: true,
	}, withoutGroup(ctor), groupCtor)
}

// TestOrderOnePartition runs the suite's order tests on single-partition
// topics, in both modes: one subscription delivers a partition in order and
// holds the next message back until the current one is acked.
func TestOrderOnePartition(t *testing.T) {
	c := newCluster(t)
	features := tests.Features{
		ConsumerGroups:  true,
		GuaranteedOrder: true,
		Persistent:      true,
	}
	modes := map[string]tests.PubSubConstructor{
		"group":  withoutGroup(pubSubFactory(c, 1, groupPerTest)),
		"fanout": withoutGroup(pubSubFactory(c, 1, nil)),
	}
	for mode, ctor := range modes {
		for name, test := range map[string]func(*testing.T, tests.TestContext, tests.PubSubConstructor){
			"TestPublishSubscribeInOrder": tests.TestPublishSubscribeInOrder,
			"TestNoAck":                   tests.TestNoAck,
		} {
			t.Run(mode+"/"+name, func(t *testing.T) {
				t.Parallel()
				test(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, ctor)
			})
		}
	}
}
