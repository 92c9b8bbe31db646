package outbox

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/kafkapubsub"
)

// NewKafkaPublisher returns the Publisher a relay uses on Kafka: a franz-go
// client from kopts behind kafkapubsub, failing records after
// deliveryTimeout, without linger (the relay batches rows itself and waits
// for every ack, so kgo's default 10 ms linger would only add to each
// event's latency). It creates the topics it publishes to whose names start
// with autoCreatePrefix (reply topics), when they are missing, with
// replicationFactor replicas (KAFKA_TOPIC_REPLICATION_FACTOR; -1 is the
// broker's default.replication.factor); "" creates none. Close the
// publisher, then the client, after the relay.
func NewKafkaPublisher(kopts []kgo.Opt, deliveryTimeout time.Duration, autoCreatePrefix string, replicationFactor int16) (*kafkapubsub.Publisher, *kgo.Client, error) {
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.RecordDeliveryTimeout(deliveryTimeout), kgo.ProducerLinger(0)}, kopts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the relay's Kafka producer: %w", err)
	}
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Client: cl,
		AutoCreateTopics: autoCreatePrefix != "", AutoCreatePrefix: autoCreatePrefix, TopicReplicationFactor: replicationFactor}, nil)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return pub, cl, nil
}
