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
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// UUIDHeader is the record header carrying a message's UUID. It is the
// header watermill-kafka uses, so both can read each other's records.
const UUIDHeader = "_watermill_message_uuid"

// DefaultKeyMetadata is the default KeyMetadata: the Metadata entry that is
// the record key.
const DefaultKeyMetadata = "partition_key"

// DefaultPurgeInterval is the default PurgeInterval.
const DefaultPurgeInterval = time.Minute

// DefaultCloseTimeout is the default CloseTimeout.
const DefaultCloseTimeout = 30 * time.Second

// ErrClosed is returned when publishing or subscribing (SubscribeInitialize
// included) after Close; errors.Is finds it in a wrapped one.
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
	// from Brokers. Default nil. The publisher never closes it: close it
	// yourself. Closing it is enough to stop the publisher (it fails the
	// Publish calls in flight with kgo.ErrClientClosed and ends the checks
	// of PurgeInterval); Close first would wait for those calls without a
	// bound (see CloseTimeout), so a broker that never answers would hang
	// a shutdown that closes the client only after Close returns. It must
	// not be transactional, and its producer settings (acks, idempotence,
	// partitioner, linger: see PublishTopicsEach) are used as they are.
	Client *kgo.Client

	// CloseTimeout is how long Close waits for in-flight Publish calls
	// before it closes the publisher's own client (Brokers), which fails
	// the records still in flight with kgo.ErrClientClosed; Close then
	// waits for those calls to return their errors. Zero means
	// [DefaultCloseTimeout], 30 s: more than the 20 s kgo gives one
	// produce request by default (kgo.ProduceRequestTimeout plus
	// kgo.RequestTimeoutOverhead), so a slow broker's answer is still
	// taken. A negative value closes the client at once. The bound is
	// needed because kgo's idempotent producer (the default) never fails
	// a produce request it sent and got no answer to, whatever the
	// records' contexts or kgo.RecordDeliveryTimeout say: a broker that
	// accepts connections and never answers would hold Close forever.
	//
	// Pitfall: a record failed this way may have been written all the
	// same (the broker got the request), so publishing it again may
	// duplicate it. CloseTimeout does nothing with Client, which the
	// publisher never closes: Close waits for in-flight calls until Kafka
	// answers them or you close that client, which is the way to unblock
	// it.
	CloseTimeout time.Duration

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
	// AutoCreateTopics. Creation waits at most 5 s (less when the messages'
	// contexts end first): a topic not created by then fails its
	// messages, with the creation's error, and the call's other topics are
	// produced all the same. A success is remembered until a Publish to the
	// topic fails because it was deleted since (UNKNOWN_TOPIC_ID, or
	// UNKNOWN_TOPIC_OR_PARTITION confirmed by a Metadata request straight to
	// a broker), or the check of PurgeInterval finds it deleted, so the next
	// Publish creates it again; a failure is retried on the next Publish.
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
	// With 3 or more, topics are created with min.insync.replicas=2
	// (TopicConfigs); a topic the broker refuses it (POLICY_VIOLATION,
	// INVALID_CONFIG: a policy that fixes topic configs) is created with
	// the broker's, and the client's logger (kgo.WithLogger) warned once
	// per topic (CreateTopics).
	TopicReplicationFactor int16

	// PurgeInterval is how often the publisher asks the brokers whether the
	// topics under PurgePrefix it has produced to, and not in the last
	// PurgeInterval, still exist, and purges those that do not from the
	// client (kgo.Client.PurgeTopicsFromProducing) and from its own
	// bookkeeping. Zero (default) means [DefaultPurgeInterval], one minute;
	// a negative value never asks. Nothing is asked or purged without
	// PurgePrefix. Without the purge, kgo keeps every topic it ever produced
	// to, and one deleted (a requester's reply topic retired, say) makes its
	// metadata refresh fail and run every kgo.MetadataMinAge (5 s by
	// default, 1 s in lockworker's relay) rather than every
	// kgo.MetadataMaxAge, naming every topic ever produced to, for the life
	// of the client; the publisher's own bookkeeping would grow with every
	// distinct topic too. Purged topics are learned afresh by the next
	// Publish to them (and created, with AutoCreateTopics).
	//
	// Each check is one Metadata request naming the idle topics under
	// PurgePrefix, sent only when there are some, straight to a broker (not
	// kgo's cached metadata, and never creating a topic). A topic is purged
	// only when the broker answered UNKNOWN_TOPIC_OR_PARTITION for it at two
	// consecutive checks, with no Publish to it in flight at either and none
	// begun from the first question to the second answer: a topic being
	// written is never purged, and one wrong answer (a broker restarted and
	// serving before it has the cluster's metadata, or one cut off from the
	// controller answering from an old view) does not purge a live topic.
	// Any other answer for the topic (it exists, or
	// TOPIC_AUTHORIZATION_FAILED), and any Publish to it, clears its first
	// strike. A failed request is logged at debug level, changes nothing,
	// and is asked again at the next interval. A deleted topic is thus
	// purged at most about two intervals after its deletion, and three
	// after its last Publish (one written just after a check is not idle
	// at the next).
	//
	// Pitfalls. A purge holds the publisher's lock while kgo purges, and kgo
	// purges in its metadata loop (it may wait behind a slow metadata
	// update), so every Publish waits for it meanwhile (forgetTopic, after
	// a Publish failed on a deleted topic, does the same). With Client,
	// leave PurgePrefix empty (or PurgeInterval negative) if you also
	// produce to topics under it through that client outside the publisher:
	// the publisher cannot see those records, and purging a topic they were
	// just written to restarts the idempotent producer's sequence numbers
	// there, so the broker may acknowledge a later record as a duplicate
	// without writing it.
	PurgeInterval time.Duration

	// PurgePrefix limits the purge of PurgeInterval to topics whose names
	// start with it: no other topic is ever asked about or purged. Empty
	// (default) purges no topic and starts no check. Set it to the prefix
	// of the topics that are deleted while publishers run (reply topics,
	// say): purging any topic risks, on wrong answers, what PurgeInterval
	// says, and there is nothing to gain on one that is never deleted.
	PurgePrefix string
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

	closeTimeout time.Duration // CloseTimeout, with its default

	mu       sync.Mutex
	closed   bool
	inFlight sync.WaitGroup
	close    sync.Once
	// produced are the topics Publish has produced to since they were last
	// purged by purgeIdle, under mu: the topics kgo may hold.
	produced map[string]*topicUse

	purgePrefix string             // PurgePrefix
	stopPurges  context.CancelFunc // called by Close; nil without a purge loop
	purgesDone  chan struct{}      // closed when the purge loop has ended
}

// topicUse is what the publisher knows of a topic it has produced to.
//
// An entry is dropped (purgeIdle) only while no Publish to the topic is in
// flight, and every Publish holds its topics' entries from begin, where it
// reads their purge counts, to end, after its forgetTopic calls: a count a
// Publish compares in forgetTopic is always the one of the entry it read,
// so dropping entries keeps forgetTopic's guarantee for late failures.
type topicUse struct {
	inFlight int       // Publish calls producing to it now
	begun    uint64    // Publish calls that began producing to it
	ended    time.Time // when the last of them ended
	purges   uint64    // its purges by forgetTopic
	// missing: the last check found it missing, with no Publish to it in
	// flight or begun since that check took the idle topics (its first
	// strike, see PurgeInterval). Cleared by begin and by any other answer.
	missing bool
}

var _ message.Publisher = (*Publisher)(nil)

// NewPublisher returns a publisher for cfg. A nil logger logs nothing. A
// client created from Brokers has kgo's producer defaults (idempotent with
// acks=all, so retried produce requests do not duplicate records) but for
// linger, which is none: a Publish waits for its records.
func NewPublisher(cfg PublisherConfig, logger watermill.LoggerAdapter) (*Publisher, error) {
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	p := &Publisher{
		client:       cfg.Client,
		keyMetadata:  cfg.KeyMetadata,
		logger:       logger,
		closeTimeout: cfg.CloseTimeout,
	}
	if p.keyMetadata == "" {
		p.keyMetadata = DefaultKeyMetadata
	}
	if p.closeTimeout == 0 {
		p.closeTimeout = DefaultCloseTimeout
	}

	switch {
	case cfg.Client != nil && (len(cfg.Brokers) > 0 || len(cfg.ClientOpts) > 0):
		return nil, errors.New("kafkapubsub: set either Client or Brokers/ClientOpts, not both")
	case cfg.Client == nil && len(cfg.Brokers) == 0:
		return nil, errors.New("kafkapubsub: no Brokers and no Client")
	case cfg.Client == nil:
		// No linger: every Publish waits for its records, which
		// PublishTopicsEach does not unlinger (kgo's default is 10 ms).
		opts := append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...), kgo.ProducerLinger(0)}, cfg.ClientOpts...)
		client, err := kgo.NewClient(opts...)
		if err != nil {
			return nil, fmt.Errorf("kafkapubsub: new client: %w", err)
		}
		p.client, p.ownsClient = client, true
	}

	if cfg.AutoCreateTopics {
		p.topics = newTopicCreator(p.client, cfg.TopicPartitions, cfg.TopicReplicationFactor)
		p.autoPrefix = cfg.AutoCreatePrefix
	}
	p.purgePrefix = cfg.PurgePrefix
	if every := cfg.PurgeInterval; every >= 0 && cfg.PurgePrefix != "" {
		if every == 0 {
			every = DefaultPurgeInterval
		}
		var ctx context.Context
		ctx, p.stopPurges = context.WithCancel(context.Background())
		p.purgesDone = make(chan struct{})
		go p.purgeLoop(ctx, every)
	}
	return p, nil
}

// untilAllDone returns a context that ends once the first message's context
// of every batches[i], i in of, has: the one request that creates their
// topics stands for each of them.
func untilAllDone(batches []TopicMessages, of []int) (context.Context, context.CancelFunc) {
	ctxs := make([]context.Context, len(of))
	for k, i := range of {
		ctxs[k] = batches[i].Messages[0].Context()
	}
	return untilAll(ctxs)
}

// untilAll returns a context that ends, with context.Canceled, once every
// one of ctxs has; never when one of them never ends.
func untilAll(ctxs []context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	var left atomic.Int64
	left.Store(int64(len(ctxs)))
	stops := make([]func() bool, len(ctxs))
	for k, c := range ctxs {
		stops[k] = context.AfterFunc(c, func() {
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

// produceContext is the context PublishTopicsEach gives Produce. kgo waits
// on it, and on no record's own, while its buffer is full
// (kgo.MaxBufferedRecords, kgo.MaxBufferedBytes), and keeps it with each
// record, where its end fails the record's batch as the record's own
// context does, and is looked at instead of it to cancel a produce request
// (with kgo.AllowIdempotentProduceCancellation) or to fail a batch kgo
// cannot send. So when the records' contexts all end together (one Done
// channel: a context the caller set on every message, or none set) it is
// theirs, and kgo treats each record as with its own alone. Otherwise it
// ends once all of theirs have (untilAll), with context.Canceled: until
// then those kgo steps wait for the last of them.
func produceContext(records []*kgo.Record) (context.Context, context.CancelFunc) {
	first := records[0].Context
	done := first.Done()
	var ctxs []context.Context
	var seen map[<-chan struct{}]bool
	for _, r := range records[1:] {
		d := r.Context.Done()
		if d == done || seen[d] {
			continue
		}
		if seen == nil {
			seen = map[<-chan struct{}]bool{}
			ctxs = append(ctxs, first)
		}
		seen[d] = true
		ctxs = append(ctxs, r.Context)
	}
	if ctxs == nil {
		return first, func() {}
	}
	return untilAll(ctxs)
}

// Publish produces msgs to topic and returns once Kafka has acknowledged all
// of them. When Kafka failed some of them, the error is a [*PublishError]
// saying which and why; the others were written, and publishing them again
// duplicates them. With Config.Client, each Publish also waits for that
// client's linger (kgo's default 10 ms; the publisher's own client has
// none).
//
// Publish waits as long as kgo retries: with the default of no
// kgo.RecordDeliveryTimeout it blocks while no broker is reachable.
// Canceling the messages' contexts (kgo honours the context of the first
// record of each batch) or a RecordDeliveryTimeout ends the wait only while
// no produce request holding them is awaiting its answer: kgo's idempotent
// producer (the default) waits for that answer however long it takes, since
// the broker may have written the records. The client option
// kgo.AllowIdempotentProduceCancellation lets them end that wait too, at
// the cost of duplicates when such records are published again (when the
// call's messages have contexts of their own, kgo keys that cancellation
// to one that ends once all of them have: one message's alone ends
// nothing in flight); without it only closing the client does: Close,
// after CloseTimeout, for the publisher's own client, or the caller
// closing its Client.
//
// While the client's buffer is full (kgo.MaxBufferedRecords, 50,000
// records by default, or kgo.MaxBufferedBytes; the unacknowledged records
// of every call count), the call's next messages wait to enter it, in no
// request yet. Canceling the messages' contexts ends that wait too, those
// messages failing with the context's error, once the contexts of all the
// call's messages have ended (at once when they share one; with
// context.Canceled when they differ); a RecordDeliveryTimeout does not end
// it, as kgo applies it only to records in its buffer.
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
func (p *Publisher) PublishTopics(batches ...TopicMessages) []error {
	errs := make([]error, len(batches))
	p.PublishTopicsEach(func(i int, err error) { errs[i] = err }, batches...)
	return errs
}

// PublishTopicsEach is [Publisher.PublishTopics] that tells each batch's
// outcome as soon as it is known, rather than once the slowest is: a
// topic whose Kafka partition has no leader holds its own batch up to
// kgo.RecordDeliveryTimeout, and the caller may go on with the others
// meanwhile. done(i, err) is called once for each batches[i], err being
// what Publish would have returned for it, when Kafka has acknowledged or
// failed every message of it (and, for a topic it found deleted, after the
// topic was forgotten). Calls may come from several goroutines at once,
// and may block: PublishTopicsEach returns once every call has returned.
//
// The records go out as kgo.Client.Produce calls, not ProduceSync, which
// would tell nothing before the last record is done, and which unlingers
// their partitions: with a client that lingers (kgo.ProducerLinger; the
// publisher's own client does not unless ClientOpts say so), the call's
// records wait for it before they are sent.
func (p *Publisher) PublishTopicsEach(done func(i int, err error), batches ...TopicMessages) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		for i := range batches {
			done(i, ErrClosed)
		}
		return
	}
	p.inFlight.Add(1)
	purges := p.begin(batches)
	p.mu.Unlock()
	defer p.inFlight.Done()
	defer p.end(batches)

	errs := make([]error, len(batches))
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
		// Bounded: every topic of the call waits for it, and with the
		// messages' deadline alone a controller that does not answer
		// would spend it, failing them all.
		ctx, stop := context.WithTimeout(ctx, createTimeout)
		for k, err := range p.topics.ensure(ctx, create...) {
			errs[of[k]] = err
		}
		stop()
		cancel()
	}
	type at struct{ batch, msg int }
	var records []*kgo.Record
	var where []at // of each record
	var produced int
	for i, b := range batches {
		switch {
		case errs[i] != nil:
			done(i, errs[i])
			continue
		case len(b.Messages) == 0:
			done(i, nil)
			continue
		}
		produced++
		for k, msg := range b.Messages {
			records, where = append(records, p.record(b.Topic, msg)), append(where, at{i, k})
		}
	}
	if produced == 0 {
		return
	}
	var mu sync.Mutex
	left := make([]int, len(batches)) // records of each batch kgo has not finished
	failed := make([][]MessageError, len(batches))
	for _, w := range where {
		left[w.batch]++
	}
	finished := make(chan int, produced) // batches whose records are all finished
	ctx, cancel := produceContext(records)
	defer cancel()
	for k, r := range records {
		w := where[k]
		// kgo calls promises one at a time on its own goroutine: this one
		// must not wait, so the batch is settled below.
		p.client.Produce(ctx, r, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed[w.batch] = append(failed[w.batch], MessageError{Index: w.msg, UUID: batches[w.batch].Messages[w.msg].UUID, Err: err})
			}
			if left[w.batch]--; left[w.batch] == 0 {
				finished <- w.batch
			}
		})
	}
	var settling sync.WaitGroup
	for range produced {
		i := <-finished
		if len(failed[i]) == 0 {
			done(i, nil)
			continue
		}
		// In its own goroutine: forgetting the topic may ask a broker,
		// and the other batches' outcomes must not wait for that.
		settling.Go(func() { done(i, p.batchError(batches, i, failed[i], purges)) })
	}
	settling.Wait()
	p.logger.Trace("Published messages", watermill.LogFields{"topics": len(batches), "count": len(records)})
}

// batchError is the error of batches[i], whose messages failed as failed
// says, after forgetting its topic if Kafka says it was deleted.
func (p *Publisher) batchError(batches []TopicMessages, i int, failed []MessageError, purges []uint64) error {
	// kgo finishes records in no order across Kafka partitions.
	slices.SortFunc(failed, func(a, b MessageError) int { return a.Index - b.Index })
	err := &PublishError{Topic: batches[i].Topic, Total: len(batches[i].Messages), Failed: failed}
	switch {
	case errors.Is(err, kerr.UnknownTopicID):
		p.forgetTopic(batches[i].Topic, purges[i])
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		p.forgetMissing(batches, []int{i}, purges)
	}
	return err
}

// produces reports whether Publish produces b, and so keeps an entry of
// its topic in Publisher.produced.
func produces(b TopicMessages) bool { return b.Topic != "" && len(b.Messages) > 0 }

// begin records that the batches' topics are being produced to, and
// returns their purge counts before they are, for forgetTopic. p.mu is
// held (PublishTopics takes it once, for the closed check too).
func (p *Publisher) begin(batches []TopicMessages) []uint64 {
	counts := make([]uint64, len(batches))
	for i, b := range batches {
		if !produces(b) {
			continue
		}
		e := p.produced[b.Topic]
		if e == nil {
			if p.produced == nil {
				p.produced = map[string]*topicUse{}
			}
			e = &topicUse{}
			p.produced[b.Topic] = e
		}
		e.inFlight++
		e.begun++
		e.missing = false
		counts[i] = e.purges
	}
	return counts
}

// end records that the batches begun with begin are done.
func (p *Publisher) end(batches []TopicMessages) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range batches {
		if produces(b) {
			e := p.produced[b.Topic]
			e.inFlight--
			e.ended = now
		}
	}
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
// would acknowledge the next batch as a duplicate without writing it. The
// caller is in flight, so the topic has an entry, the one it read the
// count from (see topicUse).
func (p *Publisher) forgetTopic(topic string, purged uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.produced[topic]
	if e == nil {
		return // cannot be: the caller is in flight, and holds the entry
	}
	if e.purges != purged {
		return // purged since this call began
	}
	e.purges++
	p.client.PurgeTopicsFromProducing(topic)
	if p.topics != nil {
		p.topics.forget(topic)
	}
}

// forgetMissing calls forgetTopic for the topics of batches[i], i in of,
// that a broker asked directly (missingTopics) says are missing. Unlike
// UNKNOWN_TOPIC_ID, a produce failing UNKNOWN_TOPIC_OR_PARTITION does not
// prove a deletion: a broker restarting, or cut off from the controller,
// may answer so for a live topic, and kgo fails records after a few such
// answers. Purging a live topic would fail the records other calls have in
// flight there (maybe written already: publishing them again duplicates
// them) and restart its idempotent sequence numbers. A failed question
// forgets nothing; the next failure or the purge loop may.
func (p *Publisher) forgetMissing(batches []TopicMessages, of []int, purges []uint64) {
	topics := make([]string, len(of))
	for k, i := range of {
		topics[k] = batches[i].Topic
	}
	ctx, cancel := untilAllDone(batches, of)
	defer cancel()
	// Bounded: the call returns only after it.
	ctx, stop := context.WithTimeout(ctx, missingCheckTimeout)
	defer stop()
	missing, err := p.missingTopics(ctx, slices.Compact(slices.Sorted(slices.Values(topics))))
	if err != nil {
		p.logger.Debug("Asking whether topics that failed UNKNOWN_TOPIC_OR_PARTITION exist failed", watermill.LogFields{"topics": topics, "err": err})
		return
	}
	for k, i := range of {
		if slices.Contains(missing, topics[k]) {
			p.forgetTopic(topics[k], purges[i])
		}
	}
}

// createTimeout bounds the creation of a call's new topics
// (AutoCreateTopics): past it their messages fail, and the other topics'
// are produced.
const createTimeout = 5 * time.Second

// missingCheckTimeout bounds forgetMissing's question: Kafka not answering
// it (brokers unreachable, which may be why the produce failed) forgets
// nothing.
const missingCheckTimeout = 5 * time.Second

// purgeLoop runs purgeMissing every interval, on the topics idle for as
// long, until ctx ends (Close) or the client is closed.
func (p *Publisher) purgeLoop(ctx context.Context, every time.Duration) {
	defer close(p.purgesDone)
	clientDone := p.client.Context().Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-clientDone:
			return
		case <-tick.C:
		}
		purged, err := p.purgeMissing(ctx, every)
		switch {
		case err != nil && ctx.Err() == nil && p.client.Context().Err() == nil:
			p.logger.Debug("Asking whether idle topics still exist failed", watermill.LogFields{"err": err})
		case len(purged) > 0:
			p.logger.Info("Purged deleted topics", watermill.LogFields{"topics": purged})
		}
	}
}

// idleCandidate is a topic idleTopics found idle: its entry, and how many
// Publish calls had begun to produce to it.
type idleCandidate struct {
	e     *topicUse
	begun uint64
}

// purgeMissing checks the topics under the purge prefix produced to, none
// in flight and the last Publish to them ended at least idle ago: it purges
// those the brokers said were missing at this check and the one before
// (see purgeIdle), and returns them. It asks nothing when no topic is idle.
func (p *Publisher) purgeMissing(ctx context.Context, idle time.Duration) ([]string, error) {
	idles := p.idleTopics(idle)
	if len(idles) == 0 {
		return nil, nil
	}
	missing, err := p.missingTopics(ctx, slices.Sorted(maps.Keys(idles)))
	if err != nil {
		return nil, err
	}
	return p.purgeIdle(idles, missing), nil
}

// idleTopics are the topics under the purge prefix produced to with no
// Publish in flight, the last one ended at least idle ago.
func (p *Publisher) idleTopics(idle time.Duration) map[string]idleCandidate {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	idles := map[string]idleCandidate{}
	for topic, e := range p.produced {
		under := p.purgePrefix != "" && strings.HasPrefix(topic, p.purgePrefix)
		if under && e.inFlight == 0 && now.Sub(e.ended) >= idle {
			idles[topic] = idleCandidate{e, e.begun}
		}
	}
	return idles
}

// missingTopics asks a broker about topics in one Metadata request, and
// returns those it says do not exist. The request goes to the broker, not
// kgo's metadata cache (which kadm answers from, and which can say a topic
// is missing seconds after it was created and written), and it never
// creates a topic (AllowAutoTopicCreation false, whatever the client's
// option).
func (p *Publisher) missingTopics(ctx context.Context, topics []string) ([]string, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, topic := range topics {
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(topic)
		req.Topics = append(req.Topics, t)
	}
	resp, err := req.RequestWith(ctx, p.client)
	if err != nil {
		return nil, err
	}
	var missing []string
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == kerr.UnknownTopicOrPartition.Code {
			missing = append(missing, *t.Topic)
		}
	}
	return missing, nil
}

// purgeIdle judges the answer for idles (as idleTopics found them): those
// of missing still as they were then, no Publish to them in flight and
// none begun since, get a strike, and are purged if they had one already
// (missing at the check before, nothing begun since: see topicUse.missing);
// the others lose their strike. One begun since may have written to the
// topic created again after the brokers were asked, and purging it then
// would restart the idempotent producer's sequence numbers on a live topic
// (see forgetTopic); one in flight may yet write there: begin cleared
// their strikes. The purge is made under mu, so no Publish begins to
// produce to the topics until it is done.
func (p *Publisher) purgeIdle(idles map[string]idleCandidate, missing []string) []string {
	gone := make(map[string]bool, len(missing)) // made before the lock every Publish waits on
	for _, topic := range missing {
		gone[topic] = true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var purge []string
	for topic, c := range idles {
		if p.produced[topic] != c.e || c.e.inFlight > 0 || c.e.begun != c.begun {
			continue // dropped, or written since: begin cleared its strike
		}
		switch {
		case !gone[topic]:
			c.e.missing = false
		case !c.e.missing:
			c.e.missing = true // the first strike
		default:
			delete(p.produced, topic)
			purge = append(purge, topic)
		}
	}
	if len(purge) == 0 {
		return nil
	}
	p.client.PurgeTopicsFromProducing(purge...) // sorts purge
	if p.topics != nil {
		for _, topic := range purge {
			p.topics.forget(topic)
		}
	}
	return purge
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
	// Sorted so that equal messages give byte-identical records; in a
	// slice sized once (slices.Sorted grows its own from empty).
	keys := make([]string, 0, len(msg.Metadata))
	for k := range msg.Metadata {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if k == UUIDHeader {
			// The consumer takes the last header of that name as the
			// UUID: a Metadata entry of it would replace msg.UUID.
			continue
		}
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: k, Value: []byte(msg.Metadata[k])})
	}
	return r
}

// Close stops the checks for deleted topics (PurgeInterval; they stop too
// when the client is closed) and waits for in-flight Publish calls. With
// the publisher's own client (Brokers) it waits CloseTimeout at most, then
// closes the client, failing the calls still in flight with errors that
// wrap kgo.ErrClientClosed, and waits for them to return. With Client it
// waits until Kafka answers them or the caller closes that client. Publish
// fails with ErrClosed afterwards. Close is idempotent and safe to call
// concurrently.
func (p *Publisher) Close() error {
	p.close.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		if p.stopPurges != nil {
			p.stopPurges()
			<-p.purgesDone
		}
		if !p.ownsClient {
			p.inFlight.Wait()
			return
		}
		done := make(chan struct{})
		go func() {
			p.inFlight.Wait()
			close(done)
		}()
		timeout := time.NewTimer(p.closeTimeout)
		select {
		case <-done:
		case <-timeout.C:
		}
		timeout.Stop()
		p.client.Close() // fails what is still in flight
		<-done
	})
	return nil
}
