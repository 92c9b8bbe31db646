package kafkapubsub_test

import (
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/kafkapubsub"
)

// TestPublishTopicsEachTellsBatchesApart: a topic whose partition answers
// NOT_LEADER, which kgo retries up to its delivery timeout (a minute here),
// does not hold the outcome of the call's other topic, which is told as soon
// as Kafka acknowledged it; the held topic's outcome is told once its leader
// is back, and only then does the call return.
func TestPublishTopicsEachTellsBatchesApart(t *testing.T) {
	const held, ok = "locks.replies.held", "locks.replies.ok"
	c := kafkatest.Cluster(t, kfake.SeedTopics(1, held, ok))
	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: held, Err: kerr.NotLeaderForPartition, Count: -1})
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{
		Brokers:    c.ListenAddrs(),
		ClientOpts: append(testClientOpts(), kgo.RecordDeliveryTimeout(time.Minute)),
	}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = pub.Close() })

	type outcome struct {
		i   int
		err error
	}
	outcomes := make(chan outcome, 2)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		pub.PublishTopicsEach(func(i int, err error) { outcomes <- outcome{i, err} },
			kafkapubsub.TopicMessages{Topic: held, Messages: []*message.Message{message.NewMessage("h1", []byte("h1"))}},
			kafkapubsub.TopicMessages{Topic: ok, Messages: []*message.Message{message.NewMessage("o1", []byte("o1"))}},
		)
	}()

	var first outcome
	select {
	case first = <-outcomes:
	case <-time.After(10 * time.Second):
		t.Fatal("no batch was told while one topic's partition has no leader")
	}
	assert.Equal(t, outcome{1, nil}, first, "the healthy topic, acknowledged")
	assert.Positive(t, fault.Hits(), "the held topic's record was sent and refused")
	select {
	case <-returned:
		t.Fatal("the call returned before the held topic's outcome")
	default:
	}

	fault.Remove()
	select {
	case second := <-outcomes:
		assert.Equal(t, outcome{0, nil}, second, "the held topic, written once its leader is back")
	case <-time.After(10 * time.Second):
		t.Fatal("the held topic was not told after its leader came back")
	}
	<-returned
}
