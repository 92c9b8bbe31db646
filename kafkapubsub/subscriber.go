package kafkapubsub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/internal/pollpause"
)

// DefaultNackRedeliveryDelay is the default NackRedeliveryDelay.
const DefaultNackRedeliveryDelay = 100 * time.Millisecond

// DefaultMaxDecompressBatchBytes is the kgo.MaxDecompressBatchBytes the
// subscriptions' clients have unless ClientOpts set another: how large one
// fetched record batch may decompress to (below it, a batch may decompress
// to at most 256 times its compressed size, and the records kgo makes of
// it are counted; see Subscribe). kgo's own default, 1 GiB, lets
// one gzipped batch of about a megabyte, from anyone with Write on the
// topic, make the consuming process allocate a gigabyte. 32 MiB is 32
// times the largest batch a broker takes by default (message.max.bytes,
// about 1 MiB, compressed) and a producer builds by default (kgo's and
// Java's 1 MiB batch or request bounds), so a batch of ordinary records
// that compresses tenfold still fits with room to spare, and events (a few
// hundred bytes each) are far from it. A batch past it is skipped
// (Subscribe).
const DefaultMaxDecompressBatchBytes = 32 << 20

// SubscriberConfig configures a [Subscriber].
type SubscriberConfig struct {
	// Brokers are the seed brokers ("host:port"). Required, no default.
	// Each Subscribe call creates its own client from them, plus one client
	// for SubscribeInitialize.
	Brokers []string

	// ClientOpts are extra options for every client of the subscriber, for
	// example TLS, SASL, kgo.WithLogger, or group timings such as
	// kgo.SessionTimeout and kgo.AutoCommitInterval. Default none. They
	// are applied after the subscriber's bounds on fetched batches
	// (Subscribe): kgo.MaxDecompressBatchBytes
	// ([DefaultMaxDecompressBatchBytes]), kgo.FetchMaxBytes (256 KiB, which
	// with the ratio bounds what one fetch response inflates to at 64 MiB)
	// and kgo.WithDecompressor, so any of those here replaces the
	// subscriber's: a kgo.WithDecompressor loses the ratio bound and the
	// skipping of batches that cannot be decompressed. The subscriber's own consuming options (topic,
	// group, start offset, commit mode, and in group mode the partition
	// callbacks) are applied after them and win.
	ClientOpts []kgo.Opt

	// ConsumerGroup selects the mode of every subscription.
	//
	// Non-empty: each Subscribe call joins this group with its own client,
	// so subscriptions (in this and other processes) share the topic's
	// partitions, and a subscription with no partition assigned receives
	// nothing. The offset of a message is marked for commit only after its
	// Ack; marked offsets are committed every kgo.AutoCommitInterval
	// (default 5s), when partitions are revoked, and on Close. A crash thus
	// redelivers up to that interval of acked messages. Rebalances are not
	// held back while a message is being handled, so its partition may move
	// to another member, which delivers the message again; a message nacked
	// after its partition moved is left to that member, not redelivered.
	//
	// Empty (default): every subscription reads all partitions of the topic
	// by itself (fan-out) and commits nothing; where it starts is set by
	// FromEnd.
	ConsumerGroup string

	// FromEnd makes a subscription start at the end of each partition,
	// receiving only records produced after it starts. Default false: start
	// at the earliest retained record. In group mode it applies only to
	// partitions the group has no committed offset for.
	//
	// The end is looked up when the client first sees the partition, a
	// moment after Subscribe returns: a record produced right after
	// Subscribe returns may be missed.
	FromEnd bool

	// KeyMetadata names the Metadata entry that receives the record key of
	// a consumed record with a non-nil key, replacing a header of the same
	// name. Empty means
	// [DefaultKeyMetadata] ("partition_key"); use the same name as the
	// publisher's KeyMetadata so that a message round-trips unchanged.
	KeyMetadata string

	// NackRedeliveryDelay is how long a subscription waits after a Nack
	// before redelivering the message. Zero means
	// [DefaultNackRedeliveryDelay] (100ms); negative means no wait. The
	// subscription delivers nothing else meanwhile, so a message that is
	// always nacked stops its partition (and, since a subscription delivers
	// one message at a time, the whole subscription), in group mode until
	// the partition is revoked.
	NackRedeliveryDelay time.Duration

	// TopicPartitions is the partition count of topics created by
	// SubscribeInitialize. Zero (default) means the broker's num.partitions.
	// In group mode, subscriptions beyond the partition count stay idle.
	TopicPartitions int32

	// TopicReplicationFactor is the replication factor of topics created by
	// SubscribeInitialize. Zero (default) means the broker's
	// default.replication.factor. With 3 or more, topics are created with
	// min.insync.replicas=2 (TopicConfigs); a topic the broker refuses it
	// (POLICY_VIOLATION, INVALID_CONFIG) is created with the broker's, and
	// the client's logger (kgo.WithLogger) warned (CreateTopics).
	TopicReplicationFactor int16
}

// Subscriber consumes watermill messages from Kafka. It is safe for
// concurrent use.
type Subscriber struct {
	cfg    SubscriberConfig
	logger watermill.LoggerAdapter

	admin  *kgo.Client // for SubscribeInitialize; connects on first use
	topics *topicCreator

	closing context.Context // canceled by Close; parent of every subscription
	cancel  context.CancelFunc

	mu     sync.Mutex
	closed bool
	subs   sync.WaitGroup
	close  sync.Once
}

var (
	_ message.Subscriber           = (*Subscriber)(nil)
	_ message.SubscribeInitializer = (*Subscriber)(nil)
)

// NewSubscriber returns a subscriber for cfg. A nil logger logs nothing.
func NewSubscriber(cfg SubscriberConfig, logger watermill.LoggerAdapter) (*Subscriber, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafkapubsub: no Brokers")
	}
	if logger == nil {
		logger = watermill.NopLogger{}
	}
	if cfg.KeyMetadata == "" {
		cfg.KeyMetadata = DefaultKeyMetadata
	}
	if cfg.NackRedeliveryDelay == 0 {
		cfg.NackRedeliveryDelay = DefaultNackRedeliveryDelay
	}
	// Building a client also validates ClientOpts before the first Subscribe.
	admin, err := kgo.NewClient(clientOpts(cfg)...)
	if err != nil {
		return nil, fmt.Errorf("kafkapubsub: new client: %w", err)
	}
	closing, cancel := context.WithCancel(context.Background())
	return &Subscriber{
		cfg:     cfg,
		logger:  logger,
		admin:   admin,
		topics:  newTopicCreator(admin, cfg.TopicPartitions, cfg.TopicReplicationFactor),
		closing: closing,
		cancel:  cancel,
	}, nil
}

// clientOpts are the options every client of a subscriber of cfg starts
// with: the brokers, bounds (a subscription's on fetched batches), then
// cfg.ClientOpts, which may replace them.
func clientOpts(cfg SubscriberConfig, bounds ...kgo.Opt) []kgo.Opt {
	return append(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, bounds...), cfg.ClientOpts...)
}

// causeLogger is a kgo.Logger that hands the subscriber's decompressor's
// warnings (why a batch it refuses could not be read, which kgo does not
// report) to the subscriber's logger as errors: watermill has no warning
// level, and the skip they explain is logged as an error.
type causeLogger struct{ log watermill.LoggerAdapter }

func (causeLogger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l causeLogger) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	var err error
	fields := watermill.LogFields{}
	for i := 0; i+1 < len(keyvals); i += 2 {
		key, _ := keyvals[i].(string)
		if e, ok := keyvals[i+1].(error); ok && key == "error" {
			err = e
			continue
		}
		fields[key] = keyvals[i+1]
	}
	l.log.Error(msg, err, fields)
}

// SubscribeInitialize creates topic unless it exists, with TopicPartitions
// and TopicReplicationFactor. It needs the CREATE permission; a broker's
// refusal of it is not an error, as it refuses before it looks whether the
// topic exists (a subscriber of a topic someone else created has no reason
// to hold the right): a topic that is missing then delivers nothing. After
// Close, and when Close ends a call in flight, the error wraps ErrClosed.
func (s *Subscriber) SubscribeInitialize(topic string) error {
	if s.closing.Err() != nil {
		return ErrClosed
	}
	err := s.topics.ensure(s.closing, topic)[0]
	// Not remembered, unlike a publisher's: nothing here would learn that
	// the topic was deleted since, and a call per Subscribe costs little.
	s.topics.forget(topic)
	if err != nil && s.closing.Err() != nil {
		// Close canceled the request or closed the admin client under it.
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// Subscribe starts consuming topic with a new client and returns the channel
// of its messages. The channel is closed when ctx is canceled, the
// subscriber is closed, or Kafka refuses the subscription in a way retrying
// cannot cure (a kgo.SessionTimeout under the broker's
// group.min.session.timeout.ms), which is logged as an error; other errors,
// a group or topic ACL's refusal included, are logged and retried, 100 ms
// after a poll that brought only errors, doubling while they last up to
// 1 s. Each message must be acked or nacked before the next one is
// delivered. A message's context is canceled once it is acked or nacked,
// or when the subscription ends.
//
// A topic deleted and created again has a new topic ID, and kgo goes on
// fetching the deleted one's, refused (UNKNOWN_TOPIC_ID). While the topic
// is missing, the refusal is logged and retried as above. Once the topic
// is there again, under another ID, the subscription logs it as an error,
// once, and reads the new topic with a new client from its start, FromEnd
// or not (every record in it was written after the subscription started),
// as it does partitions added to it later. In group mode it resumes
// from the offsets the group committed for the new topic (none, unless
// another member read it first), and does not commit the deleted topic's
// acked offsets. Brokers before Kafka 4.2 take commits by topic name: an
// automatic commit (kgo.AutoCommitInterval) of acked offsets sent between
// the topic's creation and kgo's learning of the new ID, which it does
// once fetches are refused, gives them to the new topic, which the group
// then reads from them (from its start, by kgo's default
// ConsumeResetOffset, if they are past its end).
//
// A record batch that decompresses past kgo.MaxDecompressBatchBytes
// ([DefaultMaxDecompressBatchBytes] unless ClientOpts set it), or past 256
// times its compressed size (its records and headers counted as the
// memory kgo makes of them), or that cannot be decompressed at all
// (corrupt, which a broker that does not decompress what it is produced
// passes on), is skipped whole: none of its records is delivered, the skip
// is logged as an error naming the topic, partition and the batch's
// offsets (and why a batch could not be read, before it), and the
// subscription goes on after it (kgo itself would fetch nothing more of
// the partition, or fetch a corrupt batch again forever). In group mode
// the offset past the batch is marked for commit as an acked message's is,
// so the group's later members do not meet it again. A kgo.WithDecompressor
// in ClientOpts replaces the subscriber's: a batch it cannot decompress
// stops the partition, unless it refuses such batches with
// kgo.ErrMaxDecompress, which makes them skipped alike.
//
// Those skips lose messages a producer meant: records that compress more
// than 256-fold (long runs of the same bytes) are skipped however large
// kgo.MaxDecompressBatchBytes is, and only a kgo.WithDecompressor of the
// caller's reads them; so is a batch damaged in transit when ClientOpts
// hold kgo.DisableFetchCRCValidation (with the CRC checked, kgo fetches it
// again). The 256 KiB fetch responses cost a round trip per 256 KiB when a
// subscription catches up on a long topic (kgo.FetchMaxBytes in
// ClientOpts raises it; a first batch larger than it still comes whole).
func (s *Subscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}

	start := kgo.NewOffset().AtStart()
	if s.cfg.FromEnd {
		start = kgo.NewOffset().AtEnd()
	}
	client, owned, err := s.newClient(topic, start)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.closing, cancel)
	out := make(chan *message.Message)
	fields := watermill.LogFields{"topic": topic, "consumer_group": s.cfg.ConsumerGroup}

	s.subs.Add(1)
	go func() {
		defer s.subs.Done()
		defer close(out)
		defer stop()
		defer cancel()
		s.logger.Debug("Subscription started", fields)
		for s.consume(ctx, client, owned, out, fields) {
			client.Close() // leaves the group, committing none of the deleted topic's offsets
			// The new topic was created after the subscription started:
			// every record in it is one the subscription has not read,
			// FromEnd or not.
			if client, owned, err = s.newClient(topic, kgo.NewOffset().AtStart()); err != nil {
				// Cannot be: the options made the first client.
				s.logger.Error("Subscription ended: no client for the topic created again", err, fields)
				return
			}
		}
		client.Close() // leaves the group, committing marked offsets
		s.logger.Debug("Subscription ended", fields)
	}()
	return out, nil
}

// newClient returns a client consuming topic, which starts the partitions
// it has no offset for (in group mode, none committed) at start, and in
// group mode the partitions its member is assigned (nil outside it).
func (s *Subscriber) newClient(topic string, start kgo.Offset) (*kgo.Client, *ownedPartitions, error) {
	unpack, bounds := fetchbound.Options(DefaultMaxDecompressBatchBytes, causeLogger{s.logger})
	opts := append(clientOpts(s.cfg, bounds...), kgo.ConsumeTopics(topic), kgo.ConsumeStartOffset(start))
	var owned *ownedPartitions // nil outside group mode: every partition is read
	if s.cfg.ConsumerGroup != "" {
		owned = &ownedPartitions{parts: map[int32]bool{}}
		opts = append(opts, kgo.ConsumerGroup(s.cfg.ConsumerGroup), kgo.AutoCommitMarks(),
			kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				owned.set(m[topic], true)
			}),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
				owned.set(m[topic], false)
				if owned.isRecreated() {
					// The marks are the deleted topic's. kgo refuses to
					// commit them once its metadata has the new ID (an
					// error to log), but before that a broker that takes
					// commits by name (before Kafka 4.2) would give them
					// to the new topic, whose first records the group
					// would skip.
					return
				}
				// What kgo does without this callback: commit the acked
				// offsets while the partitions are still this member's.
				if err := cl.CommitMarkedOffsets(ctx); err != nil {
					s.logger.Error("Committing offsets of revoked partitions failed", err, watermill.LogFields{"topic": topic, "consumer_group": s.cfg.ConsumerGroup})
				}
			}),
			kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
				owned.set(m[topic], false)
			}),
		)
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("kafkapubsub: new client: %w", err)
	}
	unpack.Bind(client)
	return client, owned, nil
}

// consume polls one record at a time, so that records of a partition that a
// rebalance takes away are not delivered from a local backlog, until the
// subscription ends, or the topic was deleted and created again
// (recreated), which it reports: client, bound to the deleted topic, is
// then to be replaced.
func (s *Subscriber) consume(ctx context.Context, client *kgo.Client, owned *ownedPartitions, out chan<- *message.Message, fields watermill.LogFields) bool {
	// kgo retries fetch and group errors itself, and one that lasts comes
	// back at every poll: each is logged, to be seen, once until it changes
	// or the partition's records come.
	logged := map[int32]string{}
	// kgo sends the next Fetch as soon as a poll takes the last one's
	// error, so polling again at once would have a refused topic fetched
	// tens of thousands of times a second.
	var pause pollpause.Pause
	for {
		fetches := client.PollRecords(ctx, 1)
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return false
		}
		if s.recreated(ctx, client, fetches, fields) {
			owned.setRecreated()
			return true
		}
		var refused error
		var skips []*kgo.ErrDecompressTooLarge
		errs := fetches.Errors()
		for _, e := range errs {
			var tooLarge *kgo.ErrDecompressTooLarge
			switch {
			case isRefusal(e.Err):
				refused = e.Err
			case errors.As(e.Err, &tooLarge):
				skips = append(skips, tooLarge)
			case logged[e.Partition] != e.Err.Error():
				logged[e.Partition] = e.Err.Error()
				s.logger.Error("Fetch error", e.Err, fields.Add(watermill.LogFields{"partition": e.Partition}))
			}
		}
		if refused != nil {
			// kgo would retry it forever, and the subscription would
			// deliver nothing while its channel stays open.
			s.logger.Error("Subscription ended: Kafka refuses it", refused, fields)
			return false
		}
		for _, b := range skips {
			delete(logged, b.Partition)
			s.skipBatch(client, owned, b, fields)
		}
		for _, r := range fetches.Records() {
			delete(logged, r.Partition)
			if !s.deliver(ctx, client, owned, r, out) {
				return false
			}
		}
		if pause.After(ctx, fetches.NumRecords(), errs) != nil {
			return false
		}
	}
}

// recreated reports whether fetches hold a refusal of the topic's ID
// (UNKNOWN_TOPIC_ID, which kgo returns once it lasts) while a look-up finds
// the topic under another ID: it was deleted and created again, and kgo,
// which never takes on a new ID by itself, would fetch the old one, refused,
// for ever. It logs it. A topic missing (deleted, not created again yet),
// listed under the refused ID (a broker behind, or kgo's metadata cache,
// which the look-up may answer from for kgo.MetadataMinAge), or a failed
// look-up report false: the refusal is logged as any fetch error, and
// looked at again at the next poll that brings it.
func (s *Subscriber) recreated(ctx context.Context, client *kgo.Client, fetches kgo.Fetches, fields watermill.LogFields) bool {
	var topic string
	var refused kadm.TopicID // carried by every fetch that can be refused so
	var cause error
	for _, f := range fetches {
		for _, t := range f.Topics {
			for _, p := range t.Partitions {
				if errors.Is(p.Err, kerr.UnknownTopicID) && t.TopicID != (kadm.TopicID{}) {
					topic, refused, cause = t.Topic, t.TopicID, p.Err
				}
			}
		}
	}
	if cause == nil {
		return false
	}
	tds, err := kadm.NewClient(client).ListTopics(ctx, topic)
	td := tds[topic]
	if err != nil || td.Err != nil || td.ID == refused || td.ID == (kadm.TopicID{}) {
		return false
	}
	s.logger.Error("Topic deleted and created again: reading the new one from its start", cause,
		fields.Add(watermill.LogFields{"old_topic_id": refused, "topic_id": td.ID}))
	return true
}

// skipBatch moves client past batch b, which decompresses past the bound
// or cannot be decompressed (Subscribe): kgo hands out none of its records and fetches
// nothing more of its partition until it is moved past the batch
// (kgo.ErrDecompressTooLarge). The records before it were delivered and
// acked (or, in group mode, left to the partition's next owner), one at a
// time, before this poll, so in group mode the offset past it is marked
// for commit as an acked record's is (the marks of partitions kgo no
// longer consumes are ignored). A partition this member lost since the
// fetch is left alone: its next owner meets the batch and skips it.
func (s *Subscriber) skipBatch(client *kgo.Client, owned *ownedPartitions, b *kgo.ErrDecompressTooLarge, fields watermill.LogFields) {
	if !owned.has(b.Partition) {
		return
	}
	s.logger.Error("Skipped a record batch that decompresses past the bound, or cannot be decompressed: none of its records is delivered", b,
		fields.Add(watermill.LogFields{"partition": b.Partition, "offset": b.Offset, "last_offset": b.NextOffset - 1}))
	past := map[string]map[int32]kgo.EpochOffset{b.Topic: {b.Partition: fetchbound.Past(b)}}
	client.SetOffsets(past)
	// kgo's SetOffsets marks a group's partition as well, but documents
	// marking only here. A no-op outside group mode.
	client.MarkCommitOffsets(past)
}

// isRefusal reports whether err is one that retrying cannot cure, only a
// change of the subscriber's configuration: a session timeout the broker
// refuses. An ACL refusal (group or topic) is not one: ACLs granted a
// moment later (an operator applying them as the program starts) let the
// subscription go on, so it is logged and retried.
func isRefusal(err error) bool {
	return errors.Is(err, kerr.InvalidSessionTimeout)
}

// ownedPartitions are the partitions a group subscription's member is
// assigned, as kgo's callbacks tell them.
type ownedPartitions struct {
	mu    sync.Mutex
	parts map[int32]bool
	// recreated says the topic was deleted and created again: the offsets
	// marked are the deleted topic's, not to be committed.
	recreated bool
}

// setRecreated sets o.recreated; a no-op for a nil o (no group).
func (o *ownedPartitions) setRecreated() {
	if o == nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.recreated = true
}

func (o *ownedPartitions) isRecreated() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.recreated
}

func (o *ownedPartitions) set(partitions []int32, owned bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range partitions {
		o.parts[p] = owned
	}
}

// has reports whether partition is owned; always true for a nil o (no
// group).
func (o *ownedPartitions) has(partition int32) bool {
	if o == nil {
		return true
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.parts[partition]
}

// deliver sends r until it is acked, and reports false if the subscription
// ended first. A nacked r is not sent again once its partition is no longer
// owned: its new owner delivers it (nothing past it was committed), and
// sending it here meanwhile would hold back every other partition.
func (s *Subscriber) deliver(ctx context.Context, client *kgo.Client, owned *ownedPartitions, r *kgo.Record, out chan<- *message.Message) bool {
	for first := true; first || owned.has(r.Partition); first = false {
		msg := s.message(r)
		msgCtx, cancelMsg := context.WithCancel(context.WithValue(ctx, recordKey{}, r))
		msg.SetContext(msgCtx)

		select {
		case out <- msg:
		case <-ctx.Done():
			cancelMsg()
			return false
		}

		select {
		case <-msg.Acked():
		case <-msg.Nacked():
		case <-ctx.Done():
		}
		cancelMsg()
		// Asked again: select picks at random among ready cases, and an
		// Ack that came with the end of the subscription must be marked.
		select {
		case <-msg.Acked():
			// No-op outside group mode, and for a partition revoked meanwhile.
			client.MarkCommitRecords(r)
			return true
		default:
		}
		if ctx.Err() != nil {
			return false
		}

		if s.cfg.NackRedeliveryDelay > 0 {
			select {
			case <-time.After(s.cfg.NackRedeliveryDelay):
			case <-ctx.Done():
				return false
			}
		}
	}
	return true
}

func (s *Subscriber) message(r *kgo.Record) *message.Message {
	uuid := ""
	hasUUID := false
	md := make(message.Metadata, len(r.Headers)+1)
	for _, h := range r.Headers {
		if h.Key == UUIDHeader {
			uuid, hasUUID = string(h.Value), true
			continue
		}
		md[h.Key] = string(h.Value)
	}
	if r.Key != nil {
		md[s.cfg.KeyMetadata] = string(r.Key)
	}
	if !hasUUID {
		uuid = fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)
	}
	msg := message.NewMessage(uuid, r.Value)
	msg.Metadata = md
	return msg
}

// Close ends every subscription (closing their channels and clients) and
// waits for them. Subscribe and SubscribeInitialize fail with ErrClosed
// afterwards. Close is idempotent and safe to call concurrently.
func (s *Subscriber) Close() error {
	s.close.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		s.cancel()
		s.subs.Wait()
		s.admin.Close()
	})
	return nil
}

type recordKey struct{}

// RecordFromContext returns the Kafka record a consumed message came from,
// given the message's context. Use it for the partition, offset or
// timestamp; do not modify the record.
func RecordFromContext(ctx context.Context) (*kgo.Record, bool) {
	r, ok := ctx.Value(recordKey{}).(*kgo.Record)
	return r, ok
}
