package kafkapubsub

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// UUIDHeader is the record header carrying a message's UUID. It is the
// header watermill-kafka uses, so both can read each other's records.
const UUIDHeader = "_watermill_message_uuid"

// DefaultKeyMetadata is the default KeyMetadata: the Metadata entry that is
// the record key.
const DefaultKeyMetadata = "partition_key"

// ErrClosed is returned when publishing or subscribing after Close.
var ErrClosed = errors.New("kafkapubsub: closed")

// PublisherConfig configures a [Publisher].
type PublisherConfig struct {
	// Brokers are the seed brokers ("host:port") the publisher's own client
	// connects to. No default: exactly one of Brokers and Client must be
	// set.
	Brokers []string

	// ClientOpts are extra options for the publisher's own client, for
	// example TLS, SASL, kgo.WithLogger or kgo.RecordDeliveryTimeout.
	// Default none. They are applied after Brokers. Not allowed together
	// with Client.
	//
	// Do not make the client transactional: Publish produces outside of any
	// transaction and would fail.
	ClientOpts []kgo.Opt

	// Client is an existing client to publish with, instead of creating one
	// from Brokers. Default nil. The publisher never closes it; close it
	// yourself after closing the publisher. It must not be transactional,
	// and its producer settings (acks, idempotence, partitioner) are used
	// as they are.
	Client *kgo.Client

	// KeyMetadata names the Metadata entry whose value becomes the record
	// key. Empty means [DefaultKeyMetadata] ("partition_key"). A message
	// without that entry gets a nil key and lands on any partition, so
	// messages that must stay in order relative to each other need the same
	// key. An entry with an empty value is an empty (not nil) key, which
	// hashes to one fixed partition.
	KeyMetadata string

	// AutoCreateTopics makes Publish create a topic the first time it
	// publishes to it, if it does not exist yet. Default false: publishing
	// to a missing topic fails after kgo's unknown-topic retries (unless the
	// brokers create topics themselves). Creation needs the CREATE
	// permission; where it is refused (Kafka refuses it before it looks
	// whether the topic exists), Publish produces anyway, so a topic
	// provisioned elsewhere is written and a missing one fails as without
	// AutoCreateTopics. A success is remembered until a Publish to the
	// topic fails because it was deleted since (UNKNOWN_TOPIC_OR_PARTITION
	// or UNKNOWN_TOPIC_ID), so the next Publish creates it again; a failure
	// is retried on the next Publish.
	AutoCreateTopics bool

	// AutoCreatePrefix, when set, limits AutoCreateTopics to topics whose
	// names start with it: the others are produced to as without it (a
	// topic that needs its own configuration, such as a compacted one, is
	// not created again with the broker's defaults after it was deleted).
	AutoCreatePrefix string

	// TopicPartitions is the partition count of topics created by
	// AutoCreateTopics. Zero (default) means the broker's num.partitions.
	// Choose it up front: adding partitions later moves keys to other
	// partitions and breaks per-key order.
	TopicPartitions int32

	// TopicReplicationFactor is the replication factor of topics created by
	// AutoCreateTopics. Zero (default) means the broker's
	// default.replication.factor. It cannot exceed the number of brokers.
	TopicReplicationFactor int16
}

// Publisher publishes watermill messages to Kafka. It is safe for concurrent
// use.
type Publisher struct {
	client      *kgo.Client
	ownsClient  bool
	keyMetadata string
	topics      *topicCreator // nil unless AutoCreateTopics
	autoPrefix  string        // AutoCreatePrefix
	logger      watermill.LoggerAdapter

	mu       sync.Mutex
	closed   bool
	inFlight sync.WaitGroup
	close    sync.Once
	// purges counts each topic's purges (forgetTopic), under mu.
	purges map[string]uint64
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher for cfg. A nil logger logs nothing. A
// client created from Brokers has kgo's producer defaults: idempotent with
// acks=all, so retried produce requests do not duplicate records.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		client:      cfg.Client,
		keyMetadata: cfg.KeyMetadata,
		logger:      logger,
	}
	if p.keyMetadata == "" {
		p.keyMetadata = DefaultKeyMetadata
	}

	switch {
	case cfg.Client != nil && (len(cfg.Brokers) > 0 || len(cfg.ClientOpts) > 0):
		return nil, errors.New("kafkapubsub: set either Client or Brokers/ClientOpts, not both")
	case cfg.Client == nil && len(cfg.Brokers) == 0:
		return nil, errors.New("kafkapubsub: no Brokers and no Client")
	case cfg.Client == nil:
		opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, cfg.ClientOpts...)
		client, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("kafkapubsub: new client: %w", err)
		}
		p.client, p.ownsClient = client, true
	}

	if cfg.AutoCreateTopics {
		p.topics = newTopicCreator(kadm.NewClient(p.client), cfg.TopicPartitions, cfg.TopicReplicationFactor)
		p.autoPrefix = cfg.AutoCreatePrefix
	}
	return p, nil
}

// untilAllDone returns a context that ends once the first message's context
// of every batches[i], i in of, has: the one request that creates their
// topics stands for each of them.
func untilAllDone(batches []TopicMessages, of []int) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int64
	left.Store(int64(len(of)))
	stops := make([]func() bool, len(of))
	for k, i := range of {
		stops[k] = context.AfterFunc(batches[i].Messages[0].Context(), func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// Publish produces msgs to topic and returns once Kafka has acknowledged all
// of them. When Kafka failed some of them, the error is a [*PublishError]
// saying which and why; the others were written, and publishing them again
// duplicates them.
//
// Publish waits as long as kgo retries: with the default of no
// kgo.RecordDeliveryTimeout it blocks while no broker is reachable, unless
// the messages' contexts are canceled (kgo honours the context of the first
// record of each batch).
func (p *Publisher) Publish(topic string, msgs ...*message.Message) error {
	return p.PublishTopics(TopicMessages{Topic: topic, Messages: msgs})[0]
}

// TopicMessages are one topic's messages for [Publisher.PublishTopics].
type TopicMessages struct {
	Topic    string
	Messages []*message.Message
}

// PublishTopics publishes several topics' messages in one call and returns
// once Kafka has acknowledged all of them: errs[i] is what Publish would
// have returned for batches[i]. One call lets the client put them all in
// the same produce requests, where concurrent Publish calls would each send
// their own (an idempotent client keeps up to five in flight per broker).
func (p *Publisher) PublishTopics(batches ...TopicMessages) (errs []error) {
	errs = make([]error, len(batches))
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		for i := range errs {
			errs[i] = ErrClosed
		}
		return errs
	}
	p.inFlight.Add(1)
	p.mu.Unlock()
	defer p.inFlight.Done()

	type at struct{ batch, msg int }
	var records []*kgo.Record
	var where []at // of each record
	purges := p.purgeCounts(batches)
	// The topics to create are asked for in one request: one request each,
	// one after another, a call with many new reply topics would hold every
	// other topic's messages for as many admin round trips.
	var create []string
	var of []int // batches' index of each of create
	for i, b := range batches {
		switch {
		case b.Topic == "":
			errs[i] = errors.New("kafkapubsub: empty topic")
		case len(b.Messages) > 0 && p.topics != nil && strings.HasPrefix(b.Topic, p.autoPrefix) && !p.topics.created(b.Topic):
			create, of = append(create, b.Topic), append(of, i)
		}
	}
	if len(create) > 0 {
		ctx, cancel := untilAllDone(batches, of)
		for k, err := range p.topics.ensure(ctx, create...) {
			errs[of[k]] = err
		}
		cancel()
	}
	for i, b := range batches {
		if errs[i] != nil {
			continue
		}
		for k, msg := range b.Messages {
			records, where = append(records, p.record(b.Topic, msg)), append(where, at{i, k})
		}
	}
	if len(records) == 0 {
		return errs
	}
	failed := make([][]MessageError, len(batches))
	var index map[*kgo.Record]int // of each record, made at the first failure
	for _, res := range p.client.ProduceSync(context.Background(), records...) {
		if res.Err != nil {
			// kgo gives the results in the order they completed.
			if index == nil {
				index = make(map[*kgo.Record]int, len(records))
				for i, r := range records {
					index[r] = i
				}
			}
			w := where[index[res.Record]]
			failed[w.batch] = append(failed[w.batch], MessageError{Index: w.msg, UUID: batches[w.batch].Messages[w.msg].UUID, Err: res.Err})
		}
	}
	for i, f := range failed {
		if len(f) > 0 {
			slices.SortFunc(f, func(a, b MessageError) int { return a.Index - b.Index })
			errs[i] = &PublishError{Topic: batches[i].Topic, Total: len(batches[i].Messages), Failed: f}
			if errors.Is(errs[i], kerr.UnknownTopicOrPartition) || errors.Is(errs[i], kerr.UnknownTopicID) {
				p.forgetTopic(batches[i].Topic, purges[i])
			}
		}
	}
	p.logger.Trace("Published messages", watermill.LogFields{"topics": len(batches), "count": len(records)})
	return errs
}

// purgeCounts are the batches' topics' purge counts before they are
// produced, for forgetTopic.
func (p *Publisher) purgeCounts(batches []TopicMessages) []uint64 {
	counts := make([]uint64, len(batches))
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, b := range batches {
		counts[i] = p.purges[b.Topic]
	}
	return counts
}

// forgetTopic is told that topic was deleted, and maybe created again
// since: kgo keeps failing it under its old topic ID until it is purged
// (UNKNOWN_TOPIC_ID), and the topic creator believes it exists. The next
// Publish then learns the topic afresh, creating it when AutoCreateTopics.
// Records of the topic another Publish has in flight fail (kgo's "topic
// purged while buffered"); they would have failed on the missing topic too.
//
// Only the first of the Publish calls that failed on one deletion purges
// (purged: the topic's purge count when the failed call began): a purge
// after another call has created the topic again and written to it would
// restart the idempotent producer's sequence numbers there, and the broker
// would acknowledge the next batch as a duplicate without writing it.
func (p *Publisher) forgetTopic(topic string, purged uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.purges[topic] != purged {
		return // purged since this call began
	}
	if p.purges == nil {
		p.purges = map[string]uint64{}
	}
	p.purges[topic]++
	p.client.PurgeTopicsFromProducing(topic)
	if p.topics != nil {
		p.topics.forget(topic)
	}
}

// PublishError is Publish's error when Kafka did not take some of the
// messages: the caller can tell a record the broker refuses for good (say
// kerr.MessageTooLarge) from one that failed for now, and retry only what
// failed. It unwraps to every message's error, so errors.Is and errors.As
// see them.
type PublishError struct {
	Topic string
	// Total is how many messages the call published.
	Total int
	// Failed are the messages not written, in the order of the call.
	Failed []MessageError
}

// MessageError is one message Kafka did not take.
type MessageError struct {
	// Index is the message's position among Publish's msgs.
	Index int
	UUID  string
	Err   error
}

func (e *PublishError) Error() string {
	f := e.Failed[0]
	return fmt.Sprintf("kafkapubsub: publish to %q: %d of %d messages failed, first %s: %v", e.Topic, len(e.Failed), e.Total, f.UUID, f.Err)
}

func (e *PublishError) Unwrap() []error {
	errs := make([]error, len(e.Failed))
	for i, f := range e.Failed {
		errs[i] = f.Err
	}
	return errs
}

func (p *Publisher) record(topic string, msg *message.Message) *kgo.Record {
	r := &kgo.Record{
		Topic:   topic,
		Value:   msg.Payload,
		Context: msg.Context(),
		Headers: make([]kgo.RecordHeader, 0, len(msg.Metadata)+1),
	}
	if key, ok := msg.Metadata[p.keyMetadata]; ok {
		r.Key = []byte(key)
	}
	r.Headers = append(r.Headers, kgo.RecordHeader{Key: UUIDHeader, Value: []byte(msg.UUID)})
	// Sorted so that equal messages give byte-identical records.
	for _, k := range slices.Sorted(maps.Keys(msg.Metadata)) {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return r
}

// Close waits for in-flight Publish calls, then closes the client if the
// publisher created it. Publish fails with ErrClosed afterwards. Close is
// idempotent and safe to call concurrently.
func (p *Publisher) Close() error {
	p.close.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.inFlight.Wait()
		if p.ownsClient {
			p.client.Close()
		}
	})
	return nil
}
