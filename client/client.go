package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/internal/keypartition"
	"github.com/omninode/lockworker/internal/pollpause"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/topics"
)

// Client sends lock commands for one requester and reads its replies. It is
// safe for concurrent use. Close it when done.
type Client struct {
	creds      *credentials
	cfg        Config
	replyTopic string
	baseOpts   []kgo.Opt // seeds and connection options, for every client built here
	prod       *kgo.Client
	ownProd    bool
	cons       *kgo.Client
	// purges counts the purges of the commands topic from prod, with every
	// Client producing to it with prod (see purgeState).
	purges *purgeState

	closing  context.Context // cancelled by Close: operations stop
	close    context.CancelFunc
	stopRead context.CancelFunc // stops the reader once operations are done
	readDone chan struct{}
	ops      sync.WaitGroup // operations and keep-alives in flight
	once     sync.Once
	// followDone is closed when followReplyTopic has returned.
	followDone chan struct{}
	// reply is what the reader knows of its topic beyond its records.
	reply replyState

	mu     sync.Mutex
	closed bool
	// calls are the channels of the calls waiting for a reply, by
	// request_id: more than one when Do was given one RequestID twice at
	// once (a hedged retry), each hearing every reply.
	calls map[string][]chan reply
	// leases are the held leases by fencing token: more than one when an
	// owner acquired a lock it held already (a renewal), each with a Lease.
	leases map[int64][]*Lease
	// sessions are the open sessions by session_id.
	sessions map[string]*Session
	// acquiring are the acquires in flight by lock and owner (see
	// endAcquire).
	acquiring map[acquireKey]acquiring
	// ended are the events that end a lease (lock.expired, lock.revoked,
	// lock.released), by the lease they name, every one, whether or not it
	// found a lease: the grant's reply may still be on its way to Acquire,
	// or newLease still taking it up (endedFirst relies on every end being
	// here). Keyed by lock and owner too, not the token alone, so that a
	// stray about another lock or owner with a lease's token cannot hide
	// the real end. A ring, so it stays bounded.
	ended    map[endKey]topics.Event
	endedLog []endKey
	// boot is the boot clock (nil: bootClock); tests move it past a
	// lease's or session's boot-clock deadline (bootNow).
	boot func() time.Duration
	// watching is set while the boot-clock watch runs (watchBoot).
	watching bool
	// bootTicks, when set (by a test), ticks the watch instead of a ticker
	// of bootCheckInterval.
	bootTicks chan time.Time
}

// New connects to Kafka, creates the reply topic when missing and starts
// reading it from its end. It returns once the reader is positioned, so no
// reply to a command sent afterwards can be missed. The reader follows the
// topic as it changes: partitions added, or the topic deleted and created
// again (as the workers' relay does when it has a reply for it), are read
// from their start once the client noticed, within a minute, or at once
// when a command goes unanswered past ReplyTimeout or the reader is refused
// the deleted topic (up to a second more where kgo's metadata cache
// answers: the producing client's kgo.MetadataMinAge, kgo's default 5 s
// for a Config.Client that sets none).
// Meanwhile their replies wait. A reader refused the topic's ID for 6 s
// while look-ups find the topic with the ID it was given (kgo's reader may
// hold another, from a broker that lagged a quick deletion and creation)
// drops the topic and reads it again from where it was. A command
// unanswered until RequestTimeout fails with ErrNoReply saying whether the
// topic was missing, and a logger given to the Kafka clients
// (kgo.WithLogger) is told. A Config.ReadOnly
// client has no reply topic: New only checks that the brokers answer.
// Brokers that refuse connections are tried again until ctx's deadline or
// RequestTimeout. Errors from reaching Kafka wrap ErrUnreachable.
func New(ctx context.Context, cfg Config) (*Client, error) {
	creds, err := loadCredentials(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if sub := creds.subject(); sub != "" {
		if cfg.Requester != "" && cfg.Requester != sub {
			return nil, fmt.Errorf("%w: requester %q is not the token's subject %q: the workers answer a requester only on its own reply topic", ErrInvalidConfig, cfg.Requester, sub)
		}
		cfg.Requester = sub
	}
	cfg = cfg.withDefaults()
	if !cfg.ReadOnly {
		if cfg.ReplyTopicReplicationFactor, err = replyReplicationFactor(cfg); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	creds.sub = cfg.Requester
	if !cfg.ReadOnly && (creds.static != "" || creds.key != nil) {
		// The workers refuse every token whose sub breaks their rule and
		// leave its command unanswered (ErrNoReply): refused here instead,
		// but not for a client that sends no command.
		if p := topics.SubjectProblem(creds.subject()); p != "" {
			return nil, fmt.Errorf("%w: requester %q as the tokens' sub: %s, so the workers would refuse them", ErrInvalidConfig, creds.subject(), p)
		}
	}
	c := &Client{
		creds:     creds,
		cfg:       cfg,
		calls:     make(map[string][]chan reply),
		leases:    make(map[int64][]*Lease),
		sessions:  make(map[string]*Session),
		acquiring: make(map[acquireKey]acquiring),
		ended:     make(map[endKey]topics.Event),
	}
	if !cfg.ReadOnly {
		c.replyTopic = cfg.Topics.ReplyTopic(cfg.Requester)
	}
	if !cfg.ReadOnly && !topics.ValidReplyTo(c.replyTopic, cfg.Topics.ReplyPrefix) {
		return nil, fmt.Errorf("%w: requester %q: reply topic %q is not a valid topic name", ErrInvalidConfig, cfg.Requester, c.replyTopic)
	}
	if !topics.ValidTopicName(cfg.Topics.Commands) {
		return nil, fmt.Errorf("%w: commands topic %q is not a valid topic name", ErrInvalidConfig, cfg.Topics.Commands)
	}
	optsOf := "Config.Client"
	// kafkaretry's options come before the caller's, which may replace
	// them: a broker that is back is reached within about a second, and
	// commands produced during its outage are sent then, not up to 5 s
	// later. Config.Client keeps its own; the readers built from its
	// options take them where it set none.
	if cfg.Client != nil {
		c.prod, c.baseOpts = cfg.Client, append(kafkaretry.Opts(), cfg.Client.Opts()...)
	} else {
		optsOf = "Config.KafkaOpts"
		c.baseOpts = append(append([]kgo.Opt{kgo.SeedBrokers(cfg.Brokers...)}, kafkaretry.Opts()...), cfg.KafkaOpts...)
		// No linger: a lock command is latency-bound, not throughput-bound.
		prodOpts := append(halfOpenOpts(), kgo.ProduceRequestTimeout(produceTimeout))
		prod, err := keypartition.NewClient(append(append(prodOpts, c.baseOpts...), kgo.ProducerLinger(0))...)
		if errors.Is(err, keypartition.ErrSet) {
			return nil, fmt.Errorf("%w: Config.KafkaOpts: %w: a lock's commands would be spread over partitions, applied out of the order sent", ErrInvalidConfig, err)
		}
		if err != nil {
			// kgo.NewClient reaches no broker: it refused the options.
			return nil, fmt.Errorf("%w: Config.Brokers and Config.KafkaOpts: %w", ErrInvalidConfig, err)
		}
		c.prod, c.ownProd = prod, true
	}
	c.purges = holdPurges(c.prod, cfg.Topics.Commands)
	// The options are those of every reader the SDK builds too (newReader),
	// which would consume what they say besides its own topic.
	if opt := consumes(c.prod); opt != "" {
		c.closeKafka()
		return nil, fmt.Errorf("%w: %s must not set %s: the SDK reads with its own clients, without a group", ErrInvalidConfig, optsOf, opt)
	}
	ctx, cancel := withDefaultTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	var replyParts int
	var replyID kadm.TopicID
	if cfg.ReadOnly {
		err = c.ping(ctx)
	} else {
		c.cons, replyParts, replyID, err = c.replyConsumer(ctx)
	}
	if err != nil {
		c.closeKafka()
		return nil, err
	}
	c.closing, c.close = context.WithCancel(context.Background())
	if !cfg.ReadOnly {
		c.readDone, c.followDone = make(chan struct{}), make(chan struct{})
		c.reply.lookUp = make(chan struct{}, 1)
		var readCtx context.Context
		readCtx, c.stopRead = context.WithCancel(context.Background())
		go c.read(readCtx)
		go func() {
			defer close(c.followDone)
			c.followReplyTopic(readCtx, replyParts, replyID)
		}()
	}
	return c, nil
}

// consumes names the consuming option cl was given (kgo.ConsumerGroup,
// kgo.ConsumeTopics, kgo.ConsumePartitions), "" when none.
func consumes(cl *kgo.Client) string {
	if g, _ := cl.OptValue(kgo.ConsumerGroup).(string); g != "" {
		return "kgo.ConsumerGroup"
	}
	if ts, _ := cl.OptValue(kgo.ConsumeTopics).([]string); len(ts) > 0 {
		return "kgo.ConsumeTopics"
	}
	if ps, _ := cl.OptValue(kgo.ConsumePartitions).(map[string]map[int32]kgo.Offset); len(ps) > 0 {
		return "kgo.ConsumePartitions"
	}
	return ""
}

// replyConsumer prepares the reply topic and returns its reader,
// positioned at its end, with the topic's partition count and ID (zero
// when it could not be told) as listed.
func (c *Client) replyConsumer(ctx context.Context) (*kgo.Client, int, kadm.TopicID, error) {
	offsets, err := c.prepareReplyTopic(ctx)
	if err != nil {
		return nil, 0, kadm.TopicID{}, err
	}
	id := c.topicID(ctx, c.replyTopic)
	cons, err := c.newReader(halfOpenOpts(), kgo.ConsumePartitions(offsets), kgo.FetchMaxWait(time.Second))
	if err != nil {
		return nil, 0, kadm.TopicID{}, fmt.Errorf("creating reply consumer: %w", err)
	}
	c.reply.next = maps.Clone(offsets[c.replyTopic])
	return cons, len(offsets[c.replyTopic]), id, nil
}

// readerMaxBatchBytes is the SDK's readers' default bound on what one
// fetched record batch may decompress to (kgo.MaxDecompressBatchBytes;
// kgo's own default is 1 GiB, which it inflates whole, in memory, before
// it hands out any record). Only the workers write the reply and lock
// state topics: their relay's kgo producer closes a batch at about 1 MB
// counted before compression (kgo's default ProducerBatchMaxBytes), of
// events and states of a few KiB each, so 8 MiB is 8 times the largest
// batch they write, and a batch bomb from anyone else who may produce to
// those topics costs a reader 8 MiB, not a gigabyte. Below it a batch may
// decompress to at most fetchbound.Ratio (256) times its compressed size,
// its records counted as the memory kgo makes of them, and a fetch
// response is at most 256 KiB, hundreds of states or replies: one
// response inflates to at most 64 MiB. A batch past the bounds, or that
// cannot be decompressed at all (corrupt), is skipped (skipTooLarge); kgo
// would fetch a corrupt one again forever.
const readerMaxBatchBytes = 8 << 20

// A half-open connection (a NAT or firewall that dropped its state: no
// reset, no answer, while new connections work) is given up by kgo only at
// its read deadline: kgo.RequestTimeoutOverhead past the request's own
// wait, a fetch's max wait or a produce's kgo.ProduceRequestTimeout. With
// kgo's 10 s and 10 s, the reply reader sat 11 s on a dead connection and
// a command 20 s, its resends queued behind it, so a session of the
// worker's default TTL (10 s) or a lease under about 12 s was lost with
// the brokers reachable. With these, the reply reader (max wait 1 s) gives
// a dead connection up within 3 s, under a third of that TTL, and the
// producer within 4 s: a keep-alive goes a third of the TTL after an
// answer and has until the TTL, so one sent into a dead connection has two
// thirds (6.7 s) for the 4 s, a new connection and its round trip. Both
// also pass before ReplyTimeout's default 5 s, so a command's resend goes
// on a new connection. Not shorter: the broker answers a produce within
// ProduceRequestTimeout however slow its replication (acks=all), with
// REQUEST_TIMED_OUT, which kgo retries on the same connection, and a fetch
// within its max wait, so the overhead has only the broker's queues and
// the network to cover; a loaded broker that takes 2 s more than that
// costs a new connection, not an error.
const (
	requestOverhead = 2 * time.Second
	produceTimeout  = 2 * time.Second
)

// halfOpenOpts are kgo.RequestTimeoutOverhead(requestOverhead), for the
// SDK's reply reader and its own producer, before the caller's options,
// which may replace it. Config.Client keeps its own.
func halfOpenOpts() []kgo.Opt { return []kgo.Opt{kgo.RequestTimeoutOverhead(requestOverhead)} }

// newReader makes a reader's Kafka client: the SDK's bounds on fetched
// batches (fetchbound.Options, its warnings to the client's own logger,
// kgo.WithLogger) and defaults, then the caller's options
// (Config.KafkaOpts, or Config.Client's), which may replace them, then
// opts.
func (c *Client) newReader(defaults []kgo.Opt, opts ...kgo.Opt) (*kgo.Client, error) {
	unpack, bounds := fetchbound.Options(readerMaxBatchBytes, nil)
	cons, err := kgo.NewClient(append(append(append(bounds, defaults...), c.baseOpts...), opts...)...)
	if err != nil {
		return nil, err
	}
	unpack.Bind(cons)
	return cons, nil
}

// skipTooLarge moves cons past the batch that err reports, if it is a
// kgo.ErrDecompressTooLarge (else it returns nils): kgo fetches the
// partition no further until then. The batch's records are lost to the
// reader; skip says which (it wraps kgo.ErrMaxDecompress).
func skipTooLarge(cons *kgo.Client, err error) (b *kgo.ErrDecompressTooLarge, skip error) {
	b, ok := errors.AsType[*kgo.ErrDecompressTooLarge](err)
	if !ok {
		return nil, nil
	}
	cons.SetOffsets(map[string]map[int32]kgo.EpochOffset{b.Topic: {b.Partition: fetchbound.Past(b)}})
	return b, fmt.Errorf("skipped the record batch at offsets %d..%d of partition %d of %q unread, which decompresses past the bound (Config.KafkaOpts) or cannot be decompressed: %w",
		b.Offset, b.NextOffset-1, b.Partition, b.Topic, err)
}

// ping checks that the brokers answer, within ctx or, when it has no
// deadline, RequestTimeout.
func (c *Client) ping(ctx context.Context) error {
	return ping(ctx, c.prod, c.brokers(), c.cfg.RequestTimeout)
}

// brokers are the seed brokers: Config.Brokers, or Config.Client's.
func (c *Client) brokers() []string {
	if len(c.cfg.Brokers) > 0 {
		return c.cfg.Brokers
	}
	bs, _ := c.prod.OptValue(kgo.SeedBrokers).([]string)
	return bs
}

// withDefaultTimeout bounds ctx by timeout when it has no deadline of its
// own: setup that waits for brokers must not wait forever.
func withDefaultTimeout(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, timeout)
}

// prepareReplyTopic checks the brokers, creates the reply topic when missing
// (with ReplyTopicReplicationFactor replicas, and the workers' configs for
// that many: kafkapubsub.TopicConfigs) and returns the end offset of
// each of its partitions. Reading from those offsets (rather than "the end"
// resolved later by the consumer) is what makes New's promise hold: every
// record produced after this returns is at or past them.
func (c *Client) prepareReplyTopic(ctx context.Context) (map[string]map[int32]kgo.Offset, error) {
	if err := c.ping(ctx); err != nil {
		return nil, err
	}
	adm := kadm.NewClient(c.prod)
	configs := kafkapubsub.TopicConfigs(c.cfg.ReplyTopicReplicationFactor)
	// A Kafka whose policy fixes topic configs refuses any: the topic as
	// the broker makes it, rather than no client at all, and said.
	errs, refused := kafkapubsub.CreateTopics(ctx, adm, c.cfg.ReplyTopicPartitions, c.cfg.ReplyTopicReplicationFactor, configs, c.replyTopic)
	err := errs[0]
	if refused[0] != nil {
		// The producer's logger: the reader is not made yet.
		kafkapubsub.LogTo(c.prod, kgo.LogLevelWarn, "the broker refused the reply topic's min.insync.replicas=2; creating it with the broker's",
			"topic", c.replyTopic, "err", refused[0])
	}
	// Kafka checks the right to create before whether the topic exists: a
	// requester that may not create topics may still have its reply topic,
	// made by an operator.
	denied := errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.ClusterAuthorizationFailed)
	if err != nil && !denied && !errors.Is(err, kerr.TopicAlreadyExists) {
		if errors.Is(err, kerr.InvalidReplicationFactor) {
			// Still ErrUnreachable: in a broker's restart it passes. But
			// the broker answered, so name the setting to check.
			factor := fmt.Sprint(c.cfg.ReplyTopicReplicationFactor)
			if c.cfg.ReplyTopicReplicationFactor == -1 {
				factor = "-1, the broker's default.replication.factor"
			}
			err = fmt.Errorf("Kafka refused its replication factor %s (Config.ReplyTopicReplicationFactor, else %s): "+
				"fewer brokers are up than that, or the cluster has fewer: %w", factor, EnvReplyTopicReplicationFactor, err)
		}
		return nil, fmt.Errorf("%w: creating reply topic %q: %w", ErrUnreachable, c.replyTopic, err)
	}
	createErr := err
	for {
		ends, err := adm.ListEndOffsets(ctx, c.replyTopic)
		if err == nil {
			err = ends.Error()
		}
		switch {
		case errors.Is(err, kerr.TopicAuthorizationFailed):
			if createErr != nil { // on one line, not errors.Join's two
				err = fmt.Errorf("%w (creating it: %w)", err, createErr)
			}
			return nil, fmt.Errorf("%w: reading reply topic %q: %w", ErrForbidden, c.replyTopic, err)
		case denied && errors.Is(err, kerr.UnknownTopicOrPartition):
			return nil, fmt.Errorf("%w: reply topic %q does not exist, and creating it was refused: %w", ErrForbidden, c.replyTopic, createErr)
		}
		if err == nil && len(ends[c.replyTopic]) > 0 {
			m := make(map[int32]kgo.Offset)
			ends.Each(func(o kadm.ListedOffset) { m[o.Partition] = kgo.NewOffset().At(o.Offset) })
			return map[string]map[int32]kgo.Offset{c.replyTopic: m}, nil
		}
		// A topic just created may have no leader yet: ask again shortly.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: listing offsets of reply topic %q: %w", ErrUnreachable, c.replyTopic, withContextErr(ctx, err))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ReplyTopic is where this client's replies come ("" for a read-only
// client, which has none).
func (c *Client) ReplyTopic() string { return c.replyTopic }

// Topics are the topic names this client uses (Config.Topics with defaults).
func (c *Client) Topics() topics.Names { return c.cfg.Topics }

// Close stops keep-alives and reading replies; operations in flight fail with
// ErrClosed (a waiting Acquire first withdraws from the queue, and what was
// just granted for nobody is given back, best effort: see Acquire,
// Lease.Extend, NewSession). Held leases
// are not released: they run out at their expiry, when their Lost channels
// close (by the monotonic deadline only: the boot-clock watch stops here).
// Close is idempotent.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.close()
		c.ops.Wait()
		if !c.cfg.ReadOnly {
			c.stopRead()
			<-c.followDone // it changes the reader's partitions
			c.cons.Close()
			<-c.readDone
		}
		c.closeKafka()
	})
	return nil
}

func (c *Client) closeKafka() {
	dropPurges(c.purges)
	if c.ownProd {
		c.prod.Close()
	}
}

// sends refuses an operation that sends commands on a read-only client,
// before it validates anything: its error then always wraps ErrReadOnly.
func (c *Client) sends() error {
	if c.cfg.ReadOnly {
		return ErrReadOnly
	}
	return nil
}

// begin registers an operation, so Close waits for it.
func (c *Client) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	c.ops.Add(1)
	return nil
}

// read routes every reply to the call waiting for its request_id, and every
// lock.expired, lock.revoked or lock.released to the leases it may end; a
// record that does not decode fails its call, if that can be told
// (undecodable).
func (c *Client) read(ctx context.Context) {
	defer close(c.readDone)
	var pause pollpause.Pause
	for {
		gen := c.replyGen()
		fs := c.cons.PollFetches(ctx)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return
		}
		c.replyRead(fs, gen) // where to resume, should followReplyTopic drop the topic
		// kgo retries fetch errors (those it returns too), and a reply
		// that never comes is handled by re-sending the command; they
		// are kept to explain it, and UNKNOWN_TOPIC_ID has the topic
		// looked up (followReplyTopic). A poll of errors only is
		// followed by a pause, as Watch's: kgo may return one at once
		// again.
		errs := fs.Errors()
		for _, e := range errs {
			if _, skip := skipTooLarge(c.cons, e.Err); skip != nil {
				// Replies in it are lost: their calls send again.
				c.logReply(kgo.LogLevelError, "lockworker client: "+skip.Error())
			}
			c.replyFetchFailed(e)
		}
		if pause.After(ctx, fs.NumRecords(), errs) != nil {
			return
		}
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := topics.DecodeEvent(r.Value)
			if err != nil {
				c.undecodable(r, err)
				return
			}
			c.route(ev)
		})
	}
}

// reply is what the reader hands the call waiting for a request_id: an
// event, or for a record that does not decode (err), its envelope
// (envelope).
type reply struct {
	ev  topics.Event
	err error
}

// undecodable deals with a record of the reply topic that does not decode
// as an event (err): a later version's whose fields changed shape
// (docs/design.md "Compatibility"), or a damaged record. The call waiting
// for its request_id, when its envelope tells it, fails with it rather than
// waiting on unanswered (exchange). A lease or session end cannot be
// matched to its lease or session so (which learns of it from its next
// extension, or its deadline): like the rest, it is logged (at most one
// line every undecodableLogEvery), and kept to explain a command left
// unanswered (replyTrouble) when its request_id could not be read (any
// call's answer, maybe; one that names a call fails it, and one without a
// request_id answers none). What the error quotes of the record is cut to
// maxQuoted bytes: a record may be megabytes, of anyone who may produce to
// the reply topic.
func (c *Client) undecodable(r *kgo.Record, err error) {
	env, idRead := envelope(r.Value)
	err = fmt.Errorf("undecodable reply %q (v %d, request_id %q) at offset %d of partition %d: %s",
		cut(env.Type), env.V, cut(env.RequestID), r.Offset, r.Partition, cut(err.Error()))
	now := time.Now()
	c.reply.mu.Lock()
	if !idRead {
		c.reply.undecodable, c.reply.undecodableAt = err, now
	}
	unlogged := c.reply.undecodableUnlogged
	log := now.Sub(c.reply.undecodableLogged) >= undecodableLogEvery
	if log {
		c.reply.undecodableLogged, c.reply.undecodableUnlogged = now, 0
	} else {
		c.reply.undecodableUnlogged++
	}
	c.reply.mu.Unlock()
	if log {
		c.logReply(kgo.LogLevelError, "lockworker client: "+err.Error(), "skipped_since_last_line", unlogged)
	}
	c.answerCalls(env.RequestID, reply{ev: env, err: err})
}

// answerCalls hands r to every call waiting for request_id id. A call with
// more replies than it needs (duplicates) drops the rest.
func (c *Client) answerCalls(id string, r reply) {
	if id == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.calls[id] {
		select {
		case ch <- r:
		default:
		}
	}
}

// undecodableLogEvery is how often at most an undecodable record is
// logged: one line per record would let a flood of them (a worker of a
// later version, or anyone who may produce to the reply topic) flood the
// log. The line counts the records left unlogged since the last one.
const undecodableLogEvery = 5 * time.Second

// maxQuoted bounds each text an undecodable record's error quotes of it.
const maxQuoted = 200

// cut is s, cut to maxQuoted bytes (at a character's start) and marked so
// when longer.
func cut(s string) string {
	if len(s) <= maxQuoted {
		return s
	}
	return fmt.Sprintf("%s...(cut from %d bytes)", topics.CutUTF8(s, maxQuoted), len(s))
}

// envelope is as much of the event b as decodes of its v, type and
// request_id, each zero when it does not; idRead says whether its
// request_id was read, absent or null (an event that answers no command, a
// lease's end) counting as read.
func envelope(b []byte) (ev topics.Event, idRead bool) {
	var raw struct {
		V         json.RawMessage `json:"v"`
		Type      json.RawMessage `json:"type"`
		RequestID json.RawMessage `json:"request_id"`
	}
	if json.Unmarshal(b, &raw) != nil {
		return ev, false
	}
	// Each alone: a field of another shape leaves only itself unread.
	_ = json.Unmarshal(raw.V, &ev.V)
	_ = json.Unmarshal(raw.Type, &ev.Type)
	idRead = raw.RequestID == nil || json.Unmarshal(raw.RequestID, &ev.RequestID) == nil
	return ev, idRead
}

func (c *Client) route(ev topics.Event) {
	c.mu.Lock()
	var leases []*Lease
	// A lease ends by its expiry, a revoke, a release it did not send
	// itself (an operator's, another requester's), or with its session.
	ends := ev.Type == topics.TypeExpired || ev.Type == topics.TypeRevoked || ev.Type == topics.TypeReleased
	if ends && ev.LockInfo != nil {
		// A copy: a lease that ends removes itself from c.leases.
		leases = slices.Clone(c.leases[ev.LockInfo.FencingToken])
		// Remembered even so: another Lease of the token (a renewal's)
		// may register after this event was read.
		c.rememberEnded(ev)
	}
	c.mu.Unlock()
	c.answerCalls(ev.RequestID, reply{ev: ev})
	for _, l := range leases {
		if err := l.endedBy(ev); err != nil {
			l.finish(err)
		}
	}
	c.routeSession(ev)
}

// maxEnded bounds the events remembered by rememberEnded.
const maxEnded = 1024

// endKey is the lease an end event names: what Lease.endedBy matches.
type endKey struct {
	ns, name, owner string
	token           int64
}

// rememberEnded keeps an event that ends a lease, registered or not yet
// (Client.ended). c.mu is held.
func (c *Client) rememberEnded(ev topics.Event) {
	li := ev.LockInfo
	k := endKey{li.Namespace, li.LockName, li.OwnerID, li.FencingToken}
	if _, ok := c.ended[k]; ok {
		return
	}
	if len(c.endedLog) == maxEnded {
		delete(c.ended, c.endedLog[0])
		c.endedLog = c.endedLog[1:]
	}
	c.ended[k] = ev
	c.endedLog = append(c.endedLog, k)
}

// acquireKey is a lock and an owner as the worker sees it (scoped by the
// requester under authentication): the worker keeps one place, in the
// queue or as holder, per key.
type acquireKey struct{ ns, name, owner string }

func (c *Client) acquireKey(ns, name, owner string) acquireKey {
	if sub := c.creds.subject(); sub != "" {
		owner = topics.ScopedOwner(sub, owner)
	}
	return acquireKey{ns, name, owner}
}

// holds reports whether a lease of this client holds the lock of k for its
// owner, not being released or lost. c.mu is held.
func (c *Client) holds(k acquireKey) bool {
	for _, ls := range c.leases {
		for _, l := range ls {
			if c.acquireKey(l.Namespace, l.Name, l.Owner) == k && l.ctx.Err() == nil {
				return true
			}
		}
	}
	return false
}

func newRequestID() string { return uuid.Must(uuid.NewV7()).String() }

// handler sees each reply to a command. It returns true when the reply is
// final; otherwise wait is how long the worker may take to send the final
// one (an acquire's time in the queue).
type handler func(ev topics.Event) (final bool, wait time.Duration)

func firstReply(topics.Event) (bool, time.Duration) { return true, 0 }

// exchange sends cmd and returns its final reply. A command without a reply
// after ReplyTimeout is sent again with the same request_id, until ctx ends
// or RequestTimeout passes (ErrNoReply). The caller has called begin.
func (c *Client) exchange(ctx context.Context, cmd topics.Command, h handler) (topics.Event, error) {
	return c.exchangeEvery(ctx, cmd, h, c.cfg.ReplyTimeout)
}

// exchangeEvery is exchange sending cmd again every `every` without a
// reply, rather than every ReplyTimeout: the answer to any copy is taken,
// as each has the same request_id, which the worker applies once.
func (c *Client) exchangeEvery(ctx context.Context, cmd topics.Command, h handler, every time.Duration) (topics.Event, error) {
	value, err := cmd.Encode()
	if err != nil {
		return topics.Event{}, fmt.Errorf("encoding command: %w", err)
	}
	rec := &kgo.Record{Topic: c.cfg.Topics.Commands, Key: []byte(cmd.Key()), Value: value}
	// Each send signs anew (a signing key's tokens last SignedTokenTTL, and
	// a waiting acquire is sent again after its wait): a resend keeps the
	// last header it had only if signing fails.
	authorize := func() error {
		token, err := c.creds.token()
		if err == nil && token != "" {
			rec.Headers = []kgo.RecordHeader{{Key: topics.HeaderAuthorization, Value: []byte(token)}}
		}
		return err
	}
	if err := authorize(); err != nil {
		return topics.Event{}, err
	}
	replies := make(chan reply, 16)
	c.mu.Lock()
	c.calls[cmd.RequestID] = append(c.calls[cmd.RequestID], replies)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		// Only its own: another call of the request_id may still wait.
		rest := slices.DeleteFunc(c.calls[cmd.RequestID], func(ch chan reply) bool { return ch == replies })
		if len(rest) == 0 {
			delete(c.calls, cmd.RequestID)
		} else {
			c.calls[cmd.RequestID] = rest
		}
	}()

	// purges: the purge count when the failed copy was produced.
	type failure struct {
		err    error
		purges uint64
	}
	produceErr := make(chan failure, 1)
	// purged: the topic was purged since the failed copy was produced.
	type verdict struct {
		err    error
		purged bool
	}
	// delivered: the broker acknowledged a copy, or a reply was read
	// (lock.queued), so the worker has the command or will read it: a copy
	// that fails to go out after it (sendErr) fails nothing, and the answer
	// is waited for.
	var delivered atomic.Bool
	send := func() {
		// The record is copied: kgo owns a record until its promise runs.
		r := *rec
		// Not the caller's ctx: when a buffered record's context ends, kgo
		// fails every record buffered for its partition, other calls'
		// commands too. A call given up returns without its record, which
		// is sent (and withdrawn, see abandon) or fails by itself.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.RequestTimeout)
		purges := c.purges.count.Load()
		c.prod.Produce(pctx, &r, func(_ *kgo.Record, err error) {
			cancel()
			if err == nil {
				delivered.Store(true)
				return
			}
			select {
			case produceErr <- failure{err, purges}:
			default:
			}
		})
	}
	start := time.Now()
	giveUp := start.Add(c.cfg.RequestTimeout)
	resend := start.Add(every)
	attempts := 1
	var sendErr error
	send()
	// The timer fires at the resend or at the give-up, whichever comes
	// first: a RequestTimeout shorter than `every` is kept too.
	due := func(now time.Time) time.Duration { return min(resend.Sub(now), giveUp.Sub(now)) }
	timer := time.NewTimer(due(start))
	sendAgain := func(now time.Time) {
		attempts++
		_ = authorize()
		send()
		resend = now.Add(every)
		timer.Reset(due(now))
	}
	var moved bool     // a lock.queued moved the resend and give-up
	var movedBy string // its event_id
	// A failure is judged apart from the loop, as judging it may wait for
	// a purge, which kgo runs in its metadata loop, behind a metadata
	// request in flight: meanwhile the loop still watches ctx, the timer
	// and the replies, and takes no other failure (failures is nil until
	// settled answers).
	failures := produceErr
	var settled chan verdict
	defer timer.Stop()
	for {
		select {
		case r := <-replies:
			delivered.Store(true)
			ev := r.ev
			if ev.V > topics.Version {
				// A later worker's, which may mean any field otherwise
				// (or not decode at all): not read as this version (given
				// back as a grant whose reply breaks the contract is, by
				// the caller).
				return topics.Event{}, &unreadableReply{ev.Type, fmt.Errorf("%s answered %s of v %d, and this client reads v %d: upgrade it", cmd.Operation, cut(ev.Type), ev.V, topics.Version)}
			}
			if r.err != nil {
				return topics.Event{}, &unreadableReply{ev.Type, fmt.Errorf("%s answered: %w", cmd.Operation, r.err)}
			}
			final, wait := h(ev)
			if final {
				return ev, nil
			}
			// A lock.queued moves them once: the same event again (a
			// duplicate, or the stored one answered to a resend: same
			// event_id) keeps the wait's deadline, where each would put the
			// give-up a wait further. Another event_id is a new queue
			// entry (the acquire applied again after the database lost its
			// commit), with a deadline from then.
			if wait > 0 && (!moved || ev.EventID != movedBy) {
				moved, movedBy = true, ev.EventID
				now := time.Now()
				resend, giveUp = now.Add(wait+every), now.Add(wait+c.cfg.RequestTimeout)
				timer.Reset(due(now))
			}
		case f := <-failures:
			judged := make(chan verdict, 1) // so that it never waits for a loop that returned
			failures, settled = nil, judged
			go func() {
				if errors.Is(f.err, kerr.UnknownTopicID) {
					c.purges.purge(f.purges)
				}
				judged <- verdict{f.err, c.purges.since(f.purges)}
			}()
		case v := <-settled:
			failures, settled = produceErr, nil
			if ctx.Err() != nil {
				return topics.Event{}, context.Cause(ctx)
			}
			if delivered.Load() {
				sendErr = v.err
				continue
			}
			if v.purged {
				// The topic was purged since the copy was produced, which
				// failed it, or its old ID did: sent again, to the topic
				// as kgo learns it now.
				sendAgain(time.Now())
				continue
			}
			return topics.Event{}, fmt.Errorf("%w: sending to %q: %w", ErrUnreachable, rec.Topic, v.err)
		case <-timer.C:
			now := time.Now()
			if !now.Before(giveUp) {
				err := c.withReplyTrouble(fmt.Errorf("%w: %s sent %d times over %s without an answer on %q",
					ErrNoReply, cmd.Operation, attempts, now.Sub(start).Round(time.Millisecond), c.replyTopic), start)
				if sendErr != nil {
					err = fmt.Errorf("%w (sending it again failed: %w)", err, sendErr)
				}
				return topics.Event{}, err
			}
			if now.Before(resend) {
				timer.Reset(due(now))
				continue
			}
			// The answer may be on a partition, or an instance of the
			// topic, the reader does not read yet.
			c.lookUpReplyTopic()
			sendAgain(now)
		case <-ctx.Done():
			return topics.Event{}, context.Cause(ctx)
		}
	}
}

// purgeState counts the purges of a topic from a producer (purge). Every
// Client producing to the topic with the producer shares it (several may
// be given one Config.Client): a purge acts on the producer, so only the
// first of the failures one deletion causes, in any of them, may purge.
type purgeState struct {
	key purgeKey
	// mu is held for each purge, and to read the count a purge leaves
	// (since).
	mu    sync.Mutex
	count atomic.Uint64
	users int // Clients holding it (holdPurges), under purgeStates.mu
}

type purgeKey struct {
	prod  *kgo.Client
	topic string
}

// purgeStates are the purgeStates in use: each from the New of the first
// Client that produces to its topic with its producer to the Close of the
// last.
var purgeStates = struct {
	mu sync.Mutex
	of map[purgeKey]*purgeState
}{of: make(map[purgeKey]*purgeState)}

// holdPurges returns the purgeState of topic on prod, held until
// dropPurges.
func holdPurges(prod *kgo.Client, topic string) *purgeState {
	purgeStates.mu.Lock()
	defer purgeStates.mu.Unlock()
	k := purgeKey{prod, topic}
	p := purgeStates.of[k]
	if p == nil {
		p = &purgeState{key: k}
		purgeStates.of[k] = p
	}
	p.users++
	return p
}

// dropPurges lets go of a purgeState from holdPurges.
func dropPurges(p *purgeState) {
	purgeStates.mu.Lock()
	defer purgeStates.mu.Unlock()
	if p.users--; p.users == 0 {
		delete(purgeStates.of, p.key)
	}
}

// purge purges the topic from the producer, as kafkapubsub's
// Publisher.forgetTopic does its topics: once deleted, and created again
// since (a broker back without its data), the topic fails every record
// under its old ID (UNKNOWN_TOPIC_ID) until it is purged; the next produce
// then learns it afresh. Records of it buffered for other calls, of any
// Client sharing the producer, fail ("topic purged while buffered"):
// exchange sends them again. A Config.Client's own records of the topic
// fail so too.
//
// Only the first of the failures one deletion causes purges (sent: the
// count when its record was produced): a purge after others wrote to the
// new topic would restart the idempotent producer's sequence numbers
// there, and the broker would acknowledge the next batch as a duplicate
// without writing it. The count moves after the purge, so a record
// produced in between is sent again should it fail, not lost.
func (p *purgeState) purge(sent uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.count.Load() != sent {
		return // purged since it was produced
	}
	p.key.prod.PurgeTopicsFromProducing(p.key.topic)
	p.count.Add(1)
}

// since reports whether the topic was purged since a record produced at
// count sent. It waits for a purge under way: a record that purge failed
// while buffered, read before its count moved, would seem failed for good.
func (p *purgeState) since(sent uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count.Load() != sent
}

// opContext is ctx, also cancelled (with cause ErrClosed) when the client
// closes. Public operations use it; the withdrawal of an abandoned acquire
// does not, so that it still goes out while Close waits for it.
func (c *Client) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(c.closing, func() { cancel(ErrClosed) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// command fills in the fields every command of this client shares.
func (c *Client) command(op, name string) topics.Command {
	return topics.Command{
		RequestID: newRequestID(),
		Operation: op,
		Namespace: c.cfg.Namespace,
		LockName:  name,
		ReplyTo:   c.replyTopic,
	}
}
