package outbox

import (
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/keypartition"
	"github.com/omninode/lockworker/kafkapubsub"
)

// NewKafkaPublisher returns the Publisher a relay uses on Kafka: a franz-go
// client from kopts behind kafkapubsub, failing records after
// deliveryTimeout, without linger (the relay batches rows itself and waits
// for every ack, so kgo's default 10 ms linger would only add to each
// event's latency). With createReplyTopics it creates the topics it
// publishes to whose names start with replyPrefix (reply topics), when
// they are missing, with replicationFactor replicas
// (KAFKA_TOPIC_REPLICATION_FACTOR; -1 is the broker's
// default.replication.factor); it creates no other topic. Whether or not
// it creates them, it purges the reply topics it has written to that were
// deleted since (kafkapubsub.PublisherConfig.PurgeInterval, PurgePrefix
// replyPrefix; "" purges none), and no other topic: the state, lifecycle
// and dead-letter topics are never purged.
//
// The client is the publisher's alone: never produce through it
// elsewhere. The purge cannot see those writes, and purging a reply topic
// one was just written to would restart the idempotent producer's sequence
// numbers there, so the broker may acknowledge a later record as a
// duplicate without writing it. Closing the client, after the relay, is
// enough: it fails what is still in flight and ends the purge checks. The
// publisher's own Close would wait for every publish in flight, and one
// whose produce request has no answer yet (kgo does not fail an
// idempotent batch that may have been written) can hold a shutdown.
//
// kopts may not set kgo.RecordPartitioner (it fails): the lock state
// topic's readers take a key's records only from the partition the key
// hashes to (murmur2, kgo's default), so a state record put elsewhere would
// be ignored (docs/design.md "Lock state topic"). kopts choose the
// batches' codec (kgo.ProducerBatchCompression: lockworker's
// KAFKA_COMPRESSION), kgo's default being snappy, which every reader of
// the topics must then decompress.
func NewKafkaPublisher(kopts []kgo.Opt, deliveryTimeout time.Duration, replyPrefix string, createReplyTopics bool, replicationFactor int16) (*kafkapubsub.Publisher, *kgo.Client, error) {
	cl, err := keypartition.NewClient(append([]kgo.Opt{kgo.RecordDeliveryTimeout(deliveryTimeout), kgo.ProducerLinger(0)}, kopts...)...)
	if errors.Is(err, keypartition.ErrSet) {
		return nil, nil, fmt.Errorf("outbox: the relay's Kafka options: %w: lock state readers look for a key's records there only", err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("creating the relay's Kafka producer: %w", err)
	}
	// Reply topics it creates have one partition, as the SDK's own (a
	// requester reads all of its topic): the broker's num.partitions (10 on
	// devkafka) multiplied what the producer keeps per topic it publishes
	// to, and 10,000 requesters' topics of 10 partitions held a heap past
	// the binary's 150 MiB GOMEMLIMIT, collected without end.
	pub, err := kafkapubsub.NewPublisher(kafkapubsub.PublisherConfig{Client: cl,
		AutoCreateTopics: createReplyTopics && replyPrefix != "", AutoCreatePrefix: replyPrefix,
		TopicPartitions: 1, TopicReplicationFactor: replicationFactor,
		PurgePrefix: replyPrefix}, nil)
	if err != nil {
		cl.Close()
		return nil, nil, err
	}
	return pub, cl, nil
}
