package worker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/fetchbound"
	"github.com/omninode/lockworker/internal/kafkalog"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// Relay publishes a partition's outbox rows; outbox.Relay implements it.
type Relay interface {
	// RunHeld publishes the partition's rows until ctx is done, each
	// publish waiting first for hold to return nil (outbox.Relay.RunHeld).
	RunHeld(ctx context.Context, partition int32, hold func(context.Context) error) error
	// Reserve takes a committing transaction's place in the queue of
	// rows handed to the partition's Run (see handoff), or returns nil
	// when Run does not run here.
	Reserve(partition int32) *outbox.Slot
}

// Config configures a Worker. Fields without a default are required.
type Config struct {
	// KafkaOpts reach the brokers (seeds, TLS, SASL). They come after the
	// worker's own options and SessionTimeout's, so one set here replaces
	// the worker's (the last of an option wins in kgo): the session timeout
	// and heartbeat may be set here (cmd/lockworker does; a
	// kgo.SessionTimeout needs its kgo.HeartbeatInterval beside it, see
	// SessionTimeout), and so may kgo.MaxDecompressBatchBytes (maxBatchBytes;
	// tests lower it), kgo.FetchMaxBytes (fetchbound's, 256 KiB) and
	// kgo.WithDecompressor (fetchbound.Decompressor: another loses its
	// bounds and its skipping of corrupt batches); the consumer group's workings (kgo.ConsumerGroup,
	// Balancers, AutoCommitMarks, BlockRebalanceOnPoll, ConsumeResetOffset,
	// AdjustFetchOffsetsFn, the OnPartitions callbacks) must not be, nor
	// may topics to consume (kgo.ConsumeTopics, ConsumeRegex): Run adds the
	// commands topic. kgo.DisableFetchCRCValidation is refused (New fails):
	// a batch that cannot be decompressed is skipped for good, which only
	// the CRC check keeps a batch damaged in transit from.
	// GroupInstanceID comes after them: it wins over a kgo.InstanceID here
	// (and only it makes Close remove the static member).
	KafkaOpts []kgo.Opt
	// Group is the consumer group. Default "lockworker".
	Group string
	// Names are the topic names. Default topics.DefaultNames().
	Names topics.Names
	// CommandsPartitions is used when the commands topic must be created.
	// Default 16.
	CommandsPartitions int32
	// ReplicationFactor is the replication factor of the topics
	// EnsureTopics creates. Default 0 (or -1): the broker's
	// default.replication.factor, which is 1 on a stock Apache Kafka. With
	// 3 or more, they are created with min.insync.replicas=2
	// (kafkapubsub.TopicConfigs), unless the brokers refuse it
	// (EnsureTopics).
	ReplicationFactor int16
	// WarnUnreplicated makes EnsureTopics warn, in one line naming them,
	// of the topics of Topics (made now or before) that have a single
	// replica: one broker's loss stops the worker and can lose commands
	// already acknowledged to their producers; of those with three or more
	// replicas but min.insync.replicas below 2; and of a ReplicationFactor
	// above the brokers the metadata lists (the relay's new reply topics
	// would wait for them). Default false: on a single-broker development
	// broker one replica is all there is.
	WarnUnreplicated bool
	// Store is the database.
	Store *store.Store
	// Relay publishes the outbox of each owned partition.
	Relay Relay
	// DefaultLease applies to acquires without lease_duration. Default
	// topics.DefaultLeaseDuration.
	DefaultLease time.Duration
	// RequireFencingToken refuses an extend without fencing_token, a
	// release without it that would end a lease (one that withdraws its
	// owner's wait is applied), and an acquire renewing its owner's lease
	// (INVALID_REQUEST). Default false.
	RequireFencingToken bool
	// TokenFloorCheck is what Kafka failing RaiseTokenFloor does:
	// TokenFloorRequire (the default, ""), an error; TokenFloorWarn, an
	// error log and no error; TokenFloorOff skips the check.
	TokenFloorCheck string
	// PlainEvents stores events plain instead of compacted
	// (handlers.Env.PlainEvents). Default false.
	PlainEvents bool
	// Auth, when set, requires every command to carry a requester token it
	// accepts (see admit). Default nil: no authentication.
	Auth *auth.Verifier
	// MaxReplyTopics, when above 0, bounds the topics under the reply
	// prefix that commands may make the relay create: a reply_to naming a
	// missing topic beyond it is refused (FORBIDDEN, dead-lettered). With
	// CreateReplyTopics false, only existing reply topics are accepted.
	// Default 0: neither is checked, whatever CreateReplyTopics says (the
	// service's MAX_REPLY_TOPICS is always above 0).
	MaxReplyTopics    int
	CreateReplyTopics bool
	// Instance names this worker in ce_source ("lockworker/<instance>").
	Instance string
	// CleanupInterval is how often old rows are deleted. Default 60 s.
	CleanupInterval time.Duration
	// RequestRetention and EventsRetention bound processed_requests and
	// lock_events. Defaults 24 h and 7 days.
	RequestRetention, EventsRetention time.Duration
	// NoHistory writes no lock_events rows (handlers.Env.NoHistory) and
	// prunes the ones left from before whatever EventsRetention says.
	// Default false.
	NoHistory bool
	// MaxPollRecords bounds one poll, and the records waiting for an
	// applier while its transaction runs (so a batch is at most about twice
	// it; maxQueuedBytes bounds their bytes too). Default 1000.
	MaxPollRecords int
	// DeadLetterMaxBytes bounds a dead-letter copy: the record's key
	// (counted twice: the relay writes it again as the partition_key
	// header), value and headers together (the worker adds up to 1 KiB of
	// its own headers).
	// Past it the copy is cut, with headers saying what was cut and the
	// original sizes, so that it fits the broker's record limit whatever a
	// producer sent. Default DefaultDeadLetterMaxBytes (64 KiB).
	DeadLetterMaxBytes int
	// Appliers is how many transactions of commands run at once. Each
	// serves some of the owned partitions (spread evenly as they are
	// assigned) and applies all their records polled since its last
	// transaction in one. More overlap one transaction's commit with the
	// next's work; fewer make bigger batches. Default DefaultAppliers.
	Appliers int
	// SessionTimeout of the group member, with a heartbeat of a fifth of it;
	// a kgo.SessionTimeout or kgo.HeartbeatInterval in KafkaOpts wins over
	// either. KafkaOpts that set a session timeout must set its heartbeat
	// too: the heartbeat otherwise stays this field's fifth (or franz-go's
	// 3 s) whatever their session timeout, and New fails when it is longer
	// than theirs (kgo.NewClient refuses it). Default: KafkaOpts', else
	// franz-go's 45 s with its 3 s heartbeat.
	SessionTimeout time.Duration
	// GroupInstanceID, when set, makes the worker a static group member
	// (group.instance.id). Kill usually leaves it in the group, so a restart
	// within the session timeout gets its partitions back (see Kill); Close
	// leaves the group with it, so a clean stop hands its partitions over at
	// once.
	GroupInstanceID string
	// DrainTimeout bounds how long Run, once stopped, waits for the
	// batches in flight to commit: past it they are abandoned as Kill
	// abandons them (rolled back, or, cancelled during COMMIT, maybe
	// committed, which the stored offset tells; the partitions' next owner
	// applies from the stored offsets what is not, so nothing is lost,
	// only answered later). A batch commits within milliseconds unless
	// PostgreSQL does not answer, when it would be retried until it does
	// and the stop would wait for that. Default DefaultDrainTimeout (10 s);
	// negative: no bound.
	DrainTimeout time.Duration
	// UnreachableTimeout is how long PostgreSQL may leave this replica
	// unanswered (Store.Probe, once a second, each given 2 s) before the
	// replica gives its partitions to the other replicas; it takes
	// partitions again once PostgreSQL answers it (watchPostgres). Kafka
	// sees a replica cut off from PostgreSQL alone as alive: without it,
	// that replica's partitions wait for as long as the cut lasts. When
	// PostgreSQL answers no replica, every replica withdraws, and they
	// rejoin one by one as it comes back, at the cost of up to a rebalance
	// each. Default
	// DefaultUnreachableTimeout (15 s); negative: never, the partitions
	// wait with their replica. Under 3 s, one probe unanswered for its 2 s
	// is enough (POSTGRES_UNREACHABLE_TIMEOUT refuses it).
	UnreachableTimeout time.Duration
	// Logger receives the worker's logs. Default: none.
	Logger zerolog.Logger
	// Metrics, when set, is told what the worker does.
	Metrics Metrics
}

// fetchMaxWait bounds the broker's long poll. kgo does not cut short a
// fetch in flight when partitions are added to the assignment: a replica
// that takes over a dead one's partitions fetched nothing from them until
// its idle fetch for its own partitions returned, after up to kgo's default
// 5 s on top of the session timeout. An idle worker now sends each broker
// it fetches from two fetches a second (the Java consumer's default), which
// costs a broker nothing worth counting.
const fetchMaxWait = 500 * time.Millisecond

// maxBatchBytes bounds what one fetched record batch of the commands topic
// may decompress to (kgo.MaxDecompressBatchBytes; kgo's own default is
// 1 GiB). kgo inflates a batch whole, in memory, before it hands out any of
// its records, so without a bound anyone who may produce to the commands
// topic could send a batch of about 1 MiB, within the broker's default
// message.max.bytes, that inflates to a gigabyte and gets every replica
// OOM-killed in turn. A batch past the bound is skipped unread
// (queueTooLarge). Commands are at most 64 KiB each (docs/design.md,
// Commands), and producers close a batch at about 1 MB (kgo's and
// librdkafka's default batch limit, counted before compression; the
// broker's 1 MiB default counts it after), so 16 MiB is 16 times what a
// producer with default settings sends in one batch, 256 commands at the
// limit: only a batch compressed more than 16-fold from a producer that
// counts its limit after compression (a Java producer's batch.size, 16 KiB
// by default; kgo's StreamingCompression) with that limit raised to about
// 1 MiB reaches it (about 7-fold compression, with the memory its records
// take counted: fetchbound.Decompressor). Below it, a batch may decompress
// to at most fetchbound.Ratio times its compressed size, which bounds what
// a fetch response of many small batches inflates to.
const maxBatchBytes = 16 << 20

// metadataMaxAge bounds how long partitions added to the commands topic
// (docs/design.md "Partitions of the commands topic") go unread. Under the
// classic protocol the group assigns them once its leader's metadata shows
// them (kgo's leader then rejoins), and kgo refreshes it on its own only
// every kgo.MetadataMaxAge, by default 5 minutes, during which every
// command hashed to them, a session's keep-alives among them, went
// unanswered. One Metadata request of the commands topic per interval and
// replica costs a broker nothing worth counting. (Under the consumer
// protocol the brokers assign them at once, and kgo loads their metadata
// when it is assigned them.) A variable for tests.
var metadataMaxAge = 10 * time.Second

// boundedFetch is a consumer's fetch options that bound what the records
// anyone may produce inflate to (fetchbound.Options: maxBatchBytes, the
// ratio, the response's size) and the broker's long poll, with the
// decompressor, which must be bound to the client made with them.
// Config.KafkaOpts, appended after, may set others. The commands consumer
// (New) and the token floor check's client use them.
func (w *Worker) boundedFetch() (*fetchbound.Decompressor, []kgo.Opt) {
	unpack, opts := fetchbound.Options(maxBatchBytes, kafkalog.Client(w.log))
	return unpack, append(opts, kgo.FetchMaxWait(fetchMaxWait))
}

// DefaultDrainTimeout is Config.DrainTimeout's default: well within
// cmd/lockworker's bound on the whole stop (45 s), which the relays' last
// passes and leaving the group share.
const DefaultDrainTimeout = 10 * time.Second

// DefaultAppliers is Config.Appliers's default: one applier makes the
// biggest batches, so the same throughput costs PostgreSQL the least CPU;
// more overlap commits, which more cores for PostgreSQL may repay
// (measurements: docs/performance.md).
const DefaultAppliers = 1

// Metrics receives the worker's measurements; every method must be cheap.
type Metrics interface {
	// Batch is told of every committed transaction of commands (of one or
	// more partitions) and how long it took.
	Batch(records int, took time.Duration)
	Command(operation, result string, took time.Duration)
	// Events is told, after commit, every event one applied command caused:
	// its own answer (the event with its requestID) and what it caused for
	// other requests (expiries, grants to waiters, timeouts). requestID is
	// empty for what the expiry scheduler and the periodic cleanup caused.
	Events(requestID string, evs []topics.Event)
	DeadLettered(reason string)
	// DataLoss is told when the commands topic lost records the group had
	// applied, and the stored offset was moved back (worker/dataloss.go).
	DataLoss()
}

// RestartMetrics is told, when Config.Metrics implements it too, of each
// partition found with its stored offset moved forward by another replica,
// and restarted from there (takenOver, restart): not of one let go, or
// stopped for good, before its restart was due, nor of one whose offset a
// batch found gone back (wentBack). Apart from Metrics, so that its
// other implementations need not change.
type RestartMetrics interface {
	PartitionRestarted()
}

// LostMetrics is told, when Config.Metrics implements it too, of commands
// that will never be applied, by reason: "retention", commands the
// commands topic's retention (or DeleteRecords) deleted before any replica
// of the group applied them (checkLogEnds). Apart from Metrics, so that
// its other implementations need not change.
type LostMetrics interface {
	CommandsLost(reason string, n int64)
}

// Worker is one member of the lockworker consumer group.
type Worker struct {
	cfg Config
	log zerolog.Logger
	cl  *kgo.Client
	// joined is closed once the client completed a join of the group
	// (Joined); stopping once Run stops consuming (Stopping).
	joined, stopping     chan struct{}
	markJoined, markStop func()
	replies              *replyTopics // nil: reply topics not bounded
	// batchBound is what a fetched batch may decompress to: maxBatchBytes,
	// unless Config.KafkaOpts set another.
	batchBound int

	lanes []*queue // one per applier
	mu    sync.Mutex
	parts map[int32]*partition
	seeks atomic.Bool // a partition's seek is set (seekRewound)
	// recreating says takeRecreatedTopic runs (recreated.go).
	recreating atomic.Bool
	// wakePoll ends the poll in progress, so that a seek set while no
	// records arrive is made (seekTo).
	wakePoll atomic.Pointer[context.CancelFunc]
	wg       sync.WaitGroup
	// hard is the parent of every partition's context. Run's context only
	// starts a drain; Kill cancels hard, abandoning in-flight batches.
	hard     context.Context
	killHard context.CancelFunc
	// batchRetryBase is the first backoff of a failing batch (applySegments),
	// doubled up to a minute. One second; tests change it.
	batchRetryBase time.Duration
	// halted ends when the partitions stop for good (stopAll, Kill): a
	// restart waiting (restartDelay) gives up.
	halted context.Context
	halt   context.CancelFunc
	// restarts is each partition's last restart (takenOver), under mu.
	restarts map[int32]restartLog
	// restarted is Config.Metrics's PartitionRestarted, if it has one.
	restarted func()
	// commandsLost is Config.Metrics's CommandsLost, if it has one.
	commandsLost func(reason string, n int64)
	// withdrawn is whether PostgreSQL's silence made the replica give its
	// partitions up (watchPostgres), and the serving context.
	withdrawn withdrawal
	// withdrawnMetric is Config.Metrics's Withdrawn, if it has one.
	withdrawnMetric func(bool)
	// stall holds the partitions' writes after a stall of the process
	// until the group confirms this member (nil: no session timeout known).
	stall *stallGate
	// dueReads merges the expiry schedulers' reads of their partitions'
	// next due times (untilDue).
	dueReads dueBatcher
}

// New checks cfg and creates the Kafka client; Run joins the consumer
// group and consumes.
func New(cfg Config) (*Worker, error) {
	if cfg.Store == nil || cfg.Relay == nil {
		return nil, errors.New("worker: Store and Relay are required")
	}
	switch cfg.TokenFloorCheck {
	case "":
		cfg.TokenFloorCheck = TokenFloorRequire
	case TokenFloorRequire, TokenFloorWarn, TokenFloorOff:
	default:
		return nil, fmt.Errorf("worker: TokenFloorCheck %q is not %s, %s or %s", cfg.TokenFloorCheck, TokenFloorRequire, TokenFloorWarn, TokenFloorOff)
	}
	if cfg.Group == "" {
		cfg.Group = "lockworker"
	}
	if cfg.Names.Commands == "" {
		cfg.Names = topics.DefaultNames()
	}
	if cfg.CommandsPartitions <= 0 {
		cfg.CommandsPartitions = 16
	}
	if cfg.DefaultLease <= 0 {
		cfg.DefaultLease = topics.DefaultLeaseDuration
	}
	if cfg.CleanupInterval <= 0 {
		cfg.CleanupInterval = time.Minute
	}
	if cfg.RequestRetention <= 0 {
		cfg.RequestRetention = 24 * time.Hour
	}
	switch {
	case cfg.NoHistory:
		cfg.EventsRetention = 0
	case cfg.EventsRetention <= 0:
		cfg.EventsRetention = 7 * 24 * time.Hour
	}
	if cfg.MaxPollRecords <= 0 {
		cfg.MaxPollRecords = 1000
	}
	if cfg.Appliers <= 0 {
		cfg.Appliers = DefaultAppliers
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.UnreachableTimeout == 0 {
		cfg.UnreachableTimeout = DefaultUnreachableTimeout
	}
	if cfg.DeadLetterMaxBytes <= 0 {
		cfg.DeadLetterMaxBytes = DefaultDeadLetterMaxBytes
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	w := &Worker{cfg: cfg, log: cfg.Logger, parts: map[int32]*partition{}, batchRetryBase: time.Second,
		restarts: map[int32]restartLog{}, restarted: func() {}, commandsLost: func(string, int64) {}, withdrawnMetric: func(bool) {},
		joined: make(chan struct{}), stopping: make(chan struct{})}
	w.markJoined = sync.OnceFunc(func() { close(w.joined) })
	w.markStop = sync.OnceFunc(func() { close(w.stopping) })
	if m, ok := cfg.Metrics.(RestartMetrics); ok {
		w.restarted = m.PartitionRestarted
	}
	if m, ok := cfg.Metrics.(LostMetrics); ok {
		w.commandsLost = m.CommandsLost
	}
	if m, ok := cfg.Metrics.(WithdrawMetrics); ok {
		w.withdrawnMetric = m.Withdrawn
	}
	for range cfg.Appliers {
		w.lanes = append(w.lanes, newQueue(cfg.MaxPollRecords, maxQueuedBytes))
	}
	w.hard, w.killHard = context.WithCancel(context.Background())
	w.halted, w.halt = context.WithCancel(w.hard)
	w.serveAgain()
	unpack, fetch := w.boundedFetch()
	heard := newHeardFrom()
	opts := append(fetch,
		// The group without its topic: the client joins once Run adds it,
		// so a replica still starting (topics checked, first states
		// published, HTTP served) takes no partition it would leave idle.
		kgo.ConsumerGroup(cfg.Group),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.AutoCommitMarks(),
		kgo.BlockRebalanceOnPoll(),
		// Also where a broker lost records at a point it cannot name: the
		// client then resumes no later than where the records lost began,
		// and the worker skips those it applied (lostRecords).
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		// A transactional producer's commands are applied once its
		// transaction commits, an aborted one's never (kgo's default reads
		// both); an open transaction holds back what follows it on its
		// partition until it ends.
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.AdjustFetchOffsetsFn(w.resumeFromStore),
		kgo.OnPartitionsAssigned(w.assigned),
		kgo.OnPartitionsRevoked(w.revoked),
		kgo.OnPartitionsLost(w.lost),
		kgo.WithHooks(heard),
		kgo.MetadataMaxAge(metadataMaxAge),
	)
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout), kgo.HeartbeatInterval(cfg.SessionTimeout/5))
	}
	opts = append(opts, cfg.KafkaOpts...) // after the worker's: the caller's win
	if cfg.GroupInstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.GroupInstanceID))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("creating Kafka client: %w", err)
	}
	unpack.Bind(cl)
	if off, _ := cl.OptValue(kgo.DisableFetchCRCValidation).(bool); off {
		// fetchbound.Decompressor refuses a batch it cannot decompress, and the
		// worker skips it for good: only a batch whose CRC matches, so
		// one that fails alike on every fetch and every replica, may be.
		cl.Close()
		return nil, errors.New("worker: Config.KafkaOpts may not set kgo.DisableFetchCRCValidation: a batch damaged in transit would be skipped unread for good instead of fetched again")
	}
	w.cl = cl
	readTimeout, _ := cl.OptValue(kgo.RequestTimeoutOverhead).(time.Duration)
	// Under the consumer protocol the brokers set the heartbeat interval,
	// which may be past the gate's threshold: its silence is not watched.
	serverSide, _ := cl.OptValue(kgo.ServerSideBalancer).(bool)
	w.stall = newStallGate(sessionOf(cl), readTimeout, heard, !serverSide, w.log,
		func() string { member, _ := cl.GroupMetadata(); return member },
		func(ctx context.Context, member string) (membership, error) {
			return groupMember(ctx, cl, w.cfg.Group, w.cfg.Names.Commands, member)
		},
		w.assignedBefore)
	w.batchBound = cl.OptValue(kgo.MaxDecompressBatchBytes).(int)
	if cfg.MaxReplyTopics > 0 {
		w.replies = newReplyTopics(cl, cfg.Names.ReplyPrefix, cfg.MaxReplyTopics, cfg.CreateReplyTopics)
	}
	return w, nil
}

// EnsureTopics creates the worker's own topics (Topics) when they are
// missing, with Config.ReplicationFactor replicas, and with
// min.insync.replicas=2 besides their own configs when that is 3 or more
// (kafkapubsub.TopicConfigs); where a create-topic policy refuses configs,
// without those it refused but a topic's Required ones, warned
// (createTopic). Where the brokers refuse it the right to
// create topics, it needs them made beforehand, and fails naming the first
// that is not. A topic made beforehand keeps its replicas and configs: it
// logs a warning when the lock state topic is not compacted
// (checkStateTopic). With Config.WarnUnreplicated it then warns of those
// with a single replica, of those with three or more but
// min.insync.replicas below 2 (warnReplication), and of a replication
// factor above the brokers (warnFactorAboveBrokers).
func (w *Worker) EnsureTopics(ctx context.Context) error {
	adm := kadm.NewClient(w.cl)
	specs := Topics(w.cfg.Names, w.cfg.CommandsPartitions)
	factor := w.cfg.ReplicationFactor
	if factor == 0 {
		factor = -1 // the broker's default.replication.factor
	}
	// replicas and configs: of topics made now, as their creation says them
	// (Kafka 2.4+); ask: those whose replicas the creation did not say
	// (made before, or a broker before Kafka 2.4).
	replicas := map[string]int{}
	configs := map[string]map[string]string{}
	var ask []string
	for _, spec := range specs {
		topic := spec.Name
		resp, err := w.createTopic(ctx, adm, spec, factor)
		switch {
		case err == nil:
			if len(resp.Configs) > 0 {
				configs[topic] = configValues(resp.Configs)
			}
			if resp.ReplicationFactor > 0 {
				replicas[topic] = int(resp.ReplicationFactor)
			} else {
				ask = append(ask, topic)
			}
			continue
		case errors.Is(err, kerr.TopicAlreadyExists):
		case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
			// Kafka checks the right to create before whether the topic
			// exists: one provisioned beforehand is all the worker needs.
			resp, lerr := metadata(ctx, w.cl, topic)
			if lerr == nil {
				for _, t := range resp.Topics {
					lerr = cmp.Or(lerr, kerr.ErrorForCode(t.ErrorCode))
				}
			}
			if lerr != nil {
				return fmt.Errorf("topic %q: creating it was refused (%w), and it cannot be found (%w): create it beforehand, or allow CREATE", topic, err, lerr)
			}
		default:
			return fmt.Errorf("creating topic %q: %w", topic, err)
		}
		// Made before: it keeps the replicas and configs it was made with.
		ask = append(ask, topic)
	}
	maps.Copy(configs, w.describeConfigs(ctx, ask))
	if state, ok := configs[w.cfg.Names.State]; ok {
		w.checkStateTopic(w.cfg.Names.State, state)
	}
	if w.cfg.WarnUnreplicated {
		w.warnReplication(ctx, specs, replicas, configs, ask)
	}
	return nil
}

// Run consumes until ctx is done, then drains: the records polled are
// applied, the partitions' schedulers and relays stop. Close then leaves the
// group; Kill instead forces a stop at any time. The periodic maintenance
// runs while Run does: it has returned when Run returns, however Run ends.
// Run refuses to start (ErrGroupChanged) when the commands topic's offsets
// are stored under other consumer groups only (checkGroup).
func (w *Worker) Run(ctx context.Context) error {
	defer w.markStop() // also when it returns before consuming
	if err := w.checkGroup(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while checking, as when consuming
		}
		return err
	}
	var ctxErr error
	mctx, stopMaintain := context.WithCancel(ctx)
	// The stall gate outlives the drain: it ends after stopAll, as its
	// partitions' writers do.
	gctx, stopGate := context.WithCancel(context.WithoutCancel(ctx))
	var maintaining sync.WaitGroup
	maintaining.Go(func() { w.maintain(mctx) })
	maintaining.Go(func() { w.stall.run(gctx) })
	defer func() {
		stopMaintain()
		stopGate()
		maintaining.Wait()
	}()
	var pollCtx context.Context
	renewPoll := func() {
		c, wake := context.WithCancel(ctx)
		pollCtx = c
		w.wakePoll.Store(&wake)
	}
	renewPoll()
	defer func() { (*w.wakePoll.Load())() }()
	var appliers sync.WaitGroup
	for _, q := range w.lanes {
		appliers.Go(func() { w.applyLoop(w.hard, q) })
	}
	// A stop closes the queues and starts the drain's bound at once: the
	// poll loop may be held behind a batch that cannot commit, waiting for
	// room in its queue, or in kgo for a revoke that waits for that batch,
	// and would otherwise never get to either. What it polled is then not
	// applied here but by the partitions' next owner, from the stored
	// offsets. Only the appliers' drain is bounded: the relays' last
	// publishes (stopAll) have bounds of their own.
	var drain drainBound
	// queued is the records polled that may not be applied yet, for the
	// abandon line to say what it leaves to the next owners (w.mu).
	var queued []polledSpan
	abandon := func() {
		w.mu.Lock()
		left, records := w.unappliedByPartition(queued)
		w.mu.Unlock()
		w.log.Warn().Dur("drain_timeout", w.cfg.DrainTimeout).Array("abandoned", left).Int("records", records).
			Msg("stopping: the batches in flight did not commit in time (PostgreSQL not answering?); abandoning them, their partitions' next owner applies them from the stored offsets")
		w.killHard()
	}
	defer context.AfterFunc(ctx, func() {
		for _, q := range w.lanes {
			q.close()
		}
		drain.start(w.cfg.DrainTimeout, abandon)
	})()
	w.cl.AddConsumeTopics(w.cfg.Names.Commands)
	maintaining.Go(func() { w.watchPostgres(mctx) })
	woken, wake := context.WithCancel(ctx)
	wake()
	for {
		if pollCtx.Err() != nil { // woken by seekTo
			renewPoll()
		}
		pctx := pollCtx
		if w.seeks.Load() {
			// A seek set since the last poll returned (whose wake-up
			// ended a context renewed above): made now (seekRewound),
			// not once a record arrives, which may be never.
			pctx = woken
		}
		fetches := w.cl.PollRecords(pctx, w.cfg.MaxPollRecords)
		if fetches.IsClientClosed() || ctx.Err() != nil {
			// Leaving the group waits for rebalances to be allowed again.
			w.cl.AllowRebalance()
			break
		}
		var fatal error
		var losses []*kgo.ErrDataLoss
		var tooLarge []*kgo.ErrDecompressTooLarge
		fetches.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return // the poll woken
			}
			switch {
			case errors.Is(err, kerr.InvalidSessionTimeout):
				fatal = fmt.Errorf("%w (group.min.session.timeout.ms..group.max.session.timeout.ms of the broker; set KAFKA_SESSION_TIMEOUT within them): %w", ErrSessionTimeout, err)
			case errors.Is(err, kerr.GroupAuthorizationFailed),
				errors.Is(err, kerr.TopicAuthorizationFailed) && (t == "" || t == w.cfg.Names.Commands):
				fatal = fmt.Errorf("%w (Read on the commands topic %q and the consumer group %q): %w", ErrNotAuthorized, w.cfg.Names.Commands, w.cfg.Group, err)
			}
			if lost, ok := errors.AsType[*kgo.ErrDataLoss](err); ok && t == w.cfg.Names.Commands {
				w.log.Warn().Err(err).Int32("partition", p).Msg("the commands topic lost records; checking what this replica applied")
				losses = append(losses, lost)
				return
			}
			if b, ok := errors.AsType[*kgo.ErrDecompressTooLarge](err); ok && t == w.cfg.Names.Commands {
				tooLarge = append(tooLarge, b) // queueTooLarge
				return
			}
			if errors.Is(err, kerr.UnknownTopicID) && t == w.cfg.Names.Commands {
				// kgo gives it after five in a row: not a topic just
				// created, one deleted and created again.
				if w.recreating.CompareAndSwap(false, true) {
					w.wg.Add(1) // stopAll halts it, then waits
					go w.takeRecreatedTopic()
				}
				return
			}
			w.log.Warn().Err(err).Str("topic", t).Int32("partition", p).Msg("fetch error; retrying")
		})
		if fatal != nil {
			// Retrying cannot help: the broker's bounds and rights are its
			// config, and a replica that cannot consume must not look
			// healthy.
			w.cl.AllowRebalance()
			ctxErr = fatal
			break
		}
		polled := time.Now()
		segs := make([][]segment, len(w.lanes))
		w.mu.Lock()
		// A loss goes first: it is found before the records read after it.
		w.queueLosses(segs, losses)
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			// A stopped partition waiting to restart (takenOver) stays
			// in w.parts; its records would only be dropped.
			if p := w.parts[fp.Partition]; p != nil && !p.losing && !p.stopped() && len(fp.Records) > 0 {
				p.pending.Add(1) // under w.mu: revoked sees it before it waits
				segs[p.lane] = append(segs[p.lane], segment{p: p, records: fp.Records, polledAt: polled})
			}
		})
		// A batch too large to read goes behind the records polled before
		// it; the client is moved past it once it is skipped (committed).
		w.queueTooLarge(segs, tooLarge, polled)
		seeks, detours := w.seekRewound(segs)
		queued = slices.DeleteFunc(queued, func(s polledSpan) bool { return !w.unapplied(s) })
		for _, lane := range segs {
			for _, s := range lane {
				if n := len(s.records); n > 0 {
					queued = append(queued, polledSpan{p: s.p, first: s.records[0].Offset, last: s.records[n-1].Offset, records: n})
				}
			}
		}
		w.mu.Unlock()
		if detours != nil {
			w.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{w.cfg.Names.Commands: detours})
		}
		if seeks != nil {
			w.cl.SetOffsets(map[string]map[int32]kgo.EpochOffset{w.cfg.Names.Commands: seeks})
		}
		// The segments are counted (pending, under w.mu), so a revoke may
		// run while submit waits for room behind a batch that keeps
		// failing: the applier drops a revoked partition from that batch,
		// and submit then lets go of its segments (queue.discard).
		w.cl.AllowRebalance()
		for _, lane := range segs {
			for i := range lane {
				// Outside w.mu: a poll of large records takes a while.
				lane[i].records, lane[i].bytes = detach(lane[i].records)
			}
		}
		for lane, s := range segs {
			if len(s) > 0 {
				w.lanes[lane].submit(s)
			}
		}
	}
	w.markStop()
	drain.start(w.cfg.DrainTimeout, abandon) // also after a fatal error
	for _, q := range w.lanes {
		q.close()
	}
	appliers.Wait()
	drain.end()
	w.stopAll()
	return ctxErr
}

// polledSpan is the records of one partition that one poll queued.
type polledSpan struct {
	p           *partition
	first, last int64 // offsets
	records     int
}

// unapplied reports whether s's records may still be waiting to be
// applied here: its partition is still owned or being revoked, they are
// not dropped, and the stored offset, as last known here, is not past
// them. w.mu held.
func (w *Worker) unapplied(s polledSpan) bool {
	return (w.parts[s.p.id] == s.p || revoking(s.p)) && !s.p.dropped.Load() && s.last >= s.p.stored.Load()
}

// revoking reports whether p is being let go (letGo), not lost: out of
// w.parts already, while its revoke waits for its records polled
// (awaitApplied), which a drain past its bound abandons as an owned
// partition's. (A lost one's are dropped, flagged before it left w.parts.)
func revoking(p *partition) bool { return p.letGo() && !p.lost.Load() && p.ctx.Err() == nil }

// unappliedByPartition sums up the spans still unapplied by partition, in
// its order, and returns them as the abandon line's array, with their
// records in all; a partition being revoked says so. w.mu held.
func (w *Worker) unappliedByPartition(spans []polledSpan) (*zerolog.Array, int) {
	byPart := map[int32]*polledSpan{}
	for _, s := range spans {
		if !w.unapplied(s) {
			continue
		}
		if sum, ok := byPart[s.p.id]; ok {
			sum.first, sum.last, sum.records = min(sum.first, s.first), max(sum.last, s.last), sum.records+s.records
		} else {
			byPart[s.p.id] = &s
		}
	}
	arr, total := zerolog.Arr(), 0
	for _, id := range slices.Sorted(maps.Keys(byPart)) {
		s := byPart[id]
		d := zerolog.Dict().Int32("partition", id).Int("records", s.records).Int64("first_offset", s.first).Int64("last_offset", s.last)
		if revoking(s.p) {
			d.Bool("revoking", true)
		}
		arr.Dict(d)
		total += s.records
	}
	return arr, total
}

// drainBound abandons a stopped Run's batches in flight once
// Config.DrainTimeout has passed since the stop, unless the appliers
// returned first.
type drainBound struct {
	mu    sync.Mutex
	timer *time.Timer
	ended bool
}

// start arms the bound (once; never after end; not for a bound of 0 or
// less).
func (d *drainBound) start(after time.Duration, abandon func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer == nil && !d.ended && after > 0 {
		d.timer = time.AfterFunc(after, func() {
			d.mu.Lock()
			defer d.mu.Unlock()
			if !d.ended { // not one that fired as end came
				abandon()
			}
		})
	}
}

// end disarms it: the appliers returned.
func (d *drainBound) end() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ended = true
	if d.timer != nil {
		d.timer.Stop()
	}
}

// ErrGroupChanged is Run's error when the commands topic's offsets are
// stored in PostgreSQL under other consumer groups only, as after
// KAFKA_CONSUMER_GROUP was changed (checkGroup).
var ErrGroupChanged = errors.New("the consumer group has no stored offsets of the commands topic, another group has")

// checkGroup refuses to start a group that would apply the commands topic
// again from its log start: the offsets (and topic IDs) stored in
// PostgreSQL are keyed by group, so a group renamed finds none, and would
// apply up to the topic's retention of old commands again, which duplicate
// detection (RequestRetention) no longer covers: old acquires granted
// again, old releases and revokes ending current holders. The error
// (groupChanged) says that another deployment using the other group on
// this database is not supported (one database serves one consumer group
// per commands topic: the request IDs generated from records,
// <topic>/<partition>/<offset>, would collide in processed_requests), and,
// for a rename, how to move the old group's rows or delete them. The
// commands topic's ID is read from Kafka only then. A deployment with no
// offsets stored at all starts. It runs before the group is joined, so
// nothing is applied; PostgreSQL failures that may pass are retried.
func (w *Worker) checkGroup(ctx context.Context) error {
	var err error
	w.retry(ctx, w.log, "checking the commands topic's stored offsets against the consumer group failed",
		func(err error) bool { return errors.Is(err, store.ErrTransient) }, func(ctx context.Context) error {
			err = w.cfg.Store.CheckGroup(ctx, w.cfg.Group, w.cfg.Names.Commands)
			return err
		})
	other, ok := errors.AsType[*store.OtherGroupError](err)
	if !ok {
		return err
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, err := w.topicID(ictx)
	if err != nil {
		w.log.Warn().Err(err).Str("group", other.Others[0]).
			Msg("reading the commands topic's ID to check the other group's offsets against it; a topic ID stored with them is taken for the current one")
	}
	return groupChanged(other, id, err == nil)
}

// groupChanged is checkGroup's error for other, the commands topic's ID
// being id ("": Kafka gives topics none, when known; else not known). The
// move of Others[0]'s rows is offered as is when they are known to be of
// the topic as it is now: their stored topic ID is the current one (or the
// current one is not known). With an ID stored that is not the current one
// (a topic deleted and created again since) they are only to be deleted.
// Else they are not known to be of the topic as it is now (no ID stored,
// from before migration 013 or a Kafka that gives none; or one stored while
// Kafka now gives none, a downgrade): the move is offered with a caveat
// (notRecreated), beside the DELETE. Starting the old group once would not
// tell: CheckTopicID's first call only records the current ID, beside
// offsets that may be of an earlier topic.
func groupChanged(other *store.OtherGroupError, id string, known bool) error {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	group, topic, old := q(other.Group), q(other.Topic), q(other.Others[0])
	var also string
	if len(other.Others) > 1 {
		also = fmt.Sprintf(" (%s's stored offsets changed last; delete the other groups' rows)", other.Others[0])
	}
	del := fmt.Sprintf("DELETE FROM consumer_offsets WHERE group_id = %s AND topic = %s; DELETE FROM consumer_topics WHERE group_id = %s AND topic = %s;",
		old, topic, old, topic)
	move := fmt.Sprintf("BEGIN; DELETE FROM consumer_offsets WHERE group_id = %s AND topic = %s; DELETE FROM consumer_topics WHERE group_id = %s AND topic = %s; "+
		"UPDATE consumer_offsets SET group_id = %s WHERE group_id = %s AND topic = %s; UPDATE consumer_topics SET group_id = %s WHERE group_id = %s AND topic = %s; COMMIT;",
		group, topic, group, topic, group, old, topic, group, old, topic)
	var fix string
	switch stored := other.TopicID; {
	case stored != "" && known && id != "" && id != stored:
		fix = fmt.Sprintf("The offsets of %s are of an earlier topic of that name (stored with topic ID %s, the topic's is %s: it was deleted and created again since): "+
			"moved, they would skip the current topic's commands. If KAFKA_CONSUMER_GROUP was changed on purpose: stop every replica of the old group, then delete its rows%s "+
			"(the topic is then applied from its log start): %s ",
			other.Others[0], stored, id, also, del)
	case stored != "" && (!known || id == stored):
		fix = fmt.Sprintf("If KAFKA_CONSUMER_GROUP was changed on purpose: stop every replica of the old group, then move its rows to the new group%s: %s "+
			"or, to apply the topic from its start deliberately, delete them: %s ", also, move, del)
	default:
		// Not known to be of the topic as it is now: starting the old group
		// would not tell (its first check only records the topic's ID).
		var why string
		switch {
		case stored != "":
			why = fmt.Sprintf("this Kafka gives topics no ID now (topic ID %s was stored with them)", stored)
		case known && id == "":
			why = "this Kafka gives topics no ID"
		default:
			why = "no topic ID is stored with them (from before migration 013)"
		}
		fix = fmt.Sprintf("If KAFKA_CONSUMER_GROUP was changed on purpose: stop every replica of the old group; %s: %s, "+
			"then move its rows to the new group%s: %s or, to apply the topic from its start deliberately, delete them: %s ", why, notRecreated, also, move, del)
	}
	return fmt.Errorf("%w: the consumer group %q has no stored offsets of the commands topic %q, but the group(s) %s have; "+
		"started so, it would apply the topic again from its log start, up to its retention of old commands (old acquires granted again, old releases and revokes ending current holders). "+
		"If another deployment uses %s on this database, that is not supported: one database serves one consumer group per commands topic "+
		"(the request IDs generated from commands, <topic>/<partition>/<offset>, collide); give each deployment its own database or schema. "+
		"%sor set KAFKA_CONSUMER_GROUP back to %q",
		ErrGroupChanged, other.Group, other.Topic, strings.Join(other.Others, ", "),
		strings.Join(other.Others, ", "), fix, other.Others[0])
}

// notRecreated is groupChanged's caveat to the move of offsets not known
// to be of the commands topic as it is now.
const notRecreated = "make sure the topic was not deleted and created again since that group's last start " +
	"(its offsets would then skip the current topic's commands)"

// ErrSessionTimeout is Run's error when the broker refuses the group
// session timeout (kerr.InvalidSessionTimeout): it is outside the broker's
// group.min/max.session.timeout.ms.
var ErrSessionTimeout = errors.New("the broker refused the consumer group session timeout")

// ErrNotAuthorized is Run's error when Kafka refuses this replica the
// consumer group or the commands topic (kerr.GroupAuthorizationFailed,
// kerr.TopicAuthorizationFailed): a replica that cannot consume stops
// rather than retry forever looking healthy.
var ErrNotAuthorized = errors.New("Kafka refuses this replica the consumer group or the commands topic")

// Close leaves the group and closes the client. Call it after Run returns.
func (w *Worker) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.cl.LeaveGroupContext(ctx); err != nil {
		w.log.Warn().Err(err).Msg("leaving the consumer group")
	}
	if w.cfg.GroupInstanceID != "" {
		w.leaveStatic(ctx)
	}
	w.cl.Close()
}

// leaveStatic removes this static member from the group. kgo does not (its
// LeaveGroup keeps a static member for a quick restart), so without it a
// clean stop would leave the partitions unanswered for a session timeout.
// With the consumer (KIP-848) protocol kgo's leave is a temporary one
// (member epoch -2) and the classic LeaveGroup does not apply; the
// partitions then move at the session timeout.
func (w *Worker) leaveStatic(ctx context.Context) {
	resp, err := kadm.NewClient(w.cl).LeaveGroup(ctx,
		kadm.LeaveGroup(w.cfg.Group).InstanceIDs(w.cfg.GroupInstanceID).Reason("lockworker stopping"))
	if err == nil {
		err = resp.Error()
	}
	if errors.Is(err, kerr.UnknownMemberID) {
		err = nil // kgo left already (it does after a cooperative revoke)
	}
	if err != nil {
		w.log.Warn().Err(err).Str("instance", w.cfg.GroupInstanceID).Msg("leaving the consumer group as a static member; its partitions move at the session timeout")
		return
	}
	w.log.Info().Str("instance", w.cfg.GroupInstanceID).Msg("left the consumer group as a static member")
}

// Kill stops without draining: in-flight batches are rolled back, the
// records polled are dropped, and nothing more is applied. It returns once
// the client is closed, which first revokes the partitions (onRevoked):
// that waits for the relays, stopped together, each up to
// outbox.Config.HandOverWait (10 s) for a publish Kafka has not answered,
// and for the LeaveGroup request if one is sent. Unlike a crash, the group
// is told when the member is dynamic (closing the client sends LeaveGroup),
// so its partitions move at once. A static member is kept until its session
// times out, as after a crash, and a restart within it gets its partitions
// back; except that kgo sends LeaveGroup for it too when it gave up
// partitions in a cooperative rebalance and had not rejoined yet (the
// group would assign them only at that rejoin): its restart then joins as
// a new member. For tests (cmd/lockworker's second signal exits the
// process instead). Run's context must be cancelled too.
func (w *Worker) Kill() {
	w.killHard()
	w.cl.Close()
}

// Client is the worker's Kafka client (for health checks and tests).
func (w *Worker) Client() *kgo.Client { return w.cl }

// Joined is closed once Run's client has completed a join of the consumer
// group: kgo calls the assignment's callback after every join, also one
// that assigns nothing (a group with more replicas than partitions), and
// only once the coordinator accepted it (a refused group or session
// timeout never gets there).
func (w *Worker) Joined() <-chan struct{} { return w.joined }

// Stopping is closed once Run stops consuming, for any reason (its
// context ended, or an error it cannot retry: ErrNotAuthorized,
// ErrSessionTimeout), before its drain.
func (w *Worker) Stopping() <-chan struct{} { return w.stopping }

// Partitions returns the commands partitions this worker owns now, sorted.
func (w *Worker) Partitions() []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	owned := make([]int32, 0, len(w.parts))
	for id := range w.parts {
		owned = append(owned, id)
	}
	slices.Sort(owned)
	return owned
}

// Lag returns, for each partition this worker owns, how many commands Kafka
// holds beyond the next one PostgreSQL will apply: the source of truth, so a
// partition whose batches keep failing shows its lag growing even though
// polling stopped. It costs one ListOffsets round trip and one query.
//
// When PostgreSQL does not answer, the next offsets this replica knows
// stored stand in (partition.stored: its batches' commits, its moves of
// them, the reads of Lag's last successful calls): the lag keeps growing
// with the log's end, for the partitions known so (one assigned since the
// last successful call, and not applied to since, is left out). Only when
// Kafka's end offsets cannot be read does Lag fail.
func (w *Worker) Lag(ctx context.Context) (map[int32]int64, error) { return w.LagHeld(ctx, nil) }

// LagHeld is Lag with its read of PostgreSQL, and that alone, run through
// hold (nil: at once): the HTTP side's bound on the pool's connections
// (metrics.Config.Hold), which Kafka's round trips, using no connection,
// then do not occupy. hold failing (no turn before ctx ends) is as
// PostgreSQL not answering: the offsets this replica knows stand in.
func (w *Worker) LagHeld(ctx context.Context, hold func(context.Context, func(context.Context) error) error) (map[int32]int64, error) {
	if hold == nil {
		hold = func(ctx context.Context, read func(context.Context) error) error { return read(ctx) }
	}
	owned := w.Partitions()
	lag := make(map[int32]int64, len(owned))
	if len(owned) == 0 {
		return lag, nil
	}
	topic := w.cfg.Names.Commands
	ends, err := w.logEnds(ctx)
	if err != nil {
		return nil, err
	}
	var stored map[int32]store.Position
	err = hold(ctx, func(ctx context.Context) (err error) {
		stored, err = w.cfg.Store.Offsets(ctx, w.cfg.Group, topic)
		return err
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		// PostgreSQL does not answer (or not in time, or refuses): no
		// batch of these partitions commits but this replica's, which
		// record what they stored, so the offsets it knows stand in, and
		// the lag still grows with the log.
		w.log.Debug().Err(err).Msg("reading the stored offsets for the consumer lag failed; using those this replica knows")
		w.mu.Lock()
		defer w.mu.Unlock()
		for id, p := range w.parts {
			end, ok := ends.Lookup(topic, id)
			if next := p.stored.Load(); ok && next != unknownOffset {
				lag[id] = max(0, end.Offset-next)
			}
		}
		return lag, nil
	}
	if err != nil {
		return nil, err
	}
	var starts kadm.ListedOffsets // read only when a partition was never applied
	for _, p := range owned {
		end, ok := ends.Lookup(topic, p)
		if !ok {
			continue
		}
		pos, ok := stored[p]
		next := pos.Next
		if !ok {
			if starts == nil {
				if starts, err = w.logStarts(ctx); err != nil {
					return nil, err
				}
			}
			start, _ := starts.Lookup(topic, p)
			next = start.Offset
		}
		w.knowStored(p, next)
		lag[p] = max(0, end.Offset-next)
	}
	return lag, nil
}

// Undecided returns, for each commands partition this worker owns, how many
// records Kafka holds past the partition's last stable offset: from the
// first record of the oldest transaction neither committed nor aborted yet
// to the log's end. The worker reads committed records only, so none of
// them is applied until that transaction ends (README, "Commands pile
// up"); consumer_lag counts them too, but cannot tell this cause from a
// slow database. It costs two ListOffsets round trips and no query.
func (w *Worker) Undecided(ctx context.Context) (map[int32]int64, error) {
	owned := w.Partitions()
	held := make(map[int32]int64, len(owned))
	if len(owned) == 0 {
		return held, nil
	}
	// The end first: the stable offset, read after it, has passed every
	// record committed by then, so no record appended between the two
	// reads is counted, and one held since before is.
	ends, err := w.logEnds(ctx)
	if err != nil {
		return nil, err
	}
	stable, err := w.listCommands(ctx, "last stable", (*kadm.Client).ListCommittedOffsets)
	if err != nil {
		return nil, err
	}
	topic := w.cfg.Names.Commands
	for _, p := range owned {
		end, ok := ends.Lookup(topic, p)
		lso, ok2 := stable.Lookup(topic, p)
		if ok && ok2 {
			held[p] = max(0, end.Offset-lso.Offset)
		}
	}
	return held, nil
}

// knowStored records next, read from PostgreSQL (or the log's start, of a
// partition never applied), as partition id's stored offset, if the worker
// still owns it and knows none yet: once known, its batches' commits and
// its moves keep it, and a read made before one of them would set it back.
func (w *Worker) knowStored(id int32, next int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.parts[id]; p != nil {
		p.stored.CompareAndSwap(unknownOffset, next)
	}
}

// logEnds lists the end offsets of the commands topic's partitions.
func (w *Worker) logEnds(ctx context.Context) (kadm.ListedOffsets, error) {
	return w.listCommands(ctx, "end", (*kadm.Client).ListEndOffsets)
}

// logStarts lists the start offsets of the commands topic's partitions.
func (w *Worker) logStarts(ctx context.Context) (kadm.ListedOffsets, error) {
	return w.listCommands(ctx, "start", (*kadm.Client).ListStartOffsets)
}

// listCommands lists the commands topic's partitions' offsets by list (which
// ones: which, for its error); a partition's error fails the listing.
func (w *Worker) listCommands(ctx context.Context, which string,
	list func(*kadm.Client, context.Context, ...string) (kadm.ListedOffsets, error),
) (kadm.ListedOffsets, error) {
	topic := w.cfg.Names.Commands
	listed, err := list(kadm.NewClient(w.cl), ctx, topic)
	if err == nil {
		err = listed.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("listing the %s offsets of %s: %w", which, topic, err)
	}
	return listed, nil
}

// resumeFromStore starts each assigned partition at the offset PostgreSQL
// says is next, the source of truth; Kafka's committed offset is ignored.
// An error fails the assignment, which ends the client's group session: it
// loses every partition of this replica, and the whole group rebalances. So
// failures that may pass by themselves (transient) are retried here, until
// the session begins revoking (ctx).
func (w *Worker) resumeFromStore(ctx context.Context, offsets map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	var stored map[int32]store.Position
	sent := map[int32]*offsetMove{} // moves whose answer may have been lost (checkLogEnds)
	read := map[int32]storedRead{}  // the stored offsets before this worker's moves
	err := w.retry(ctx, w.log, "reading or checking the stored offsets of the assigned partitions failed", transient, func(ctx context.Context) (err error) {
		stored, err = w.checkStored(ctx, offsets[w.cfg.Names.Commands], sent, read)
		return err
	})
	if err != nil {
		return nil, err
	}
	w.knowResumed(offsets[w.cfg.Names.Commands], stored, read)
	for _, parts := range offsets {
		for p := range parts {
			if pos, ok := stored[p]; ok {
				// With the epoch, the client first asks the broker whether
				// its log still holds the records applied (lostRecords).
				parts[p] = kgo.NewOffset().At(pos.Next).WithEpoch(pos.Epoch)
			} else {
				parts[p] = kgo.NewOffset().AtStart()
			}
		}
	}
	return offsets, nil
}

// knowResumed records the stored offsets the assigned partitions resume
// from, as checked and moved, as their partitions' (Lag's fallback): no
// batch of them commits before they resume, so nothing newer is known. A
// partition never applied is left to Lag's next read. It is also where
// the partition resumed (resumed), for its first batch to compare with;
// or the group's offset committed to Kafka (assigned), when that is
// above the stored offset as read before this worker moved it (read,
// checkLogEnds; none: as stored) or nothing is stored: Kafka's is marked
// only once PostgreSQL committed what it covers, so PostgreSQL lost
// transactions (a restore, a failover; or, benign, another replica moved
// it back after Kafka lost records, before the group's commit followed),
// and the first batch checks the fencing tokens before it grants
// (wentBack). This worker's own move back, after
// Kafka lost records it applied, is no such sign: Kafka's commit, which
// lags PostgreSQL's, may well be above where it moved.
func (w *Worker) knowResumed(assigned map[int32]kgo.Offset, stored map[int32]store.Position, read map[int32]storedRead) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, committed := range assigned {
		p := w.parts[id]
		if p == nil {
			continue
		}
		// Nothing stored (a new group, or this replica forgot a
		// recreated topic's offsets, whose commits Kafka deleted with
		// it): an earlier resume's is void.
		resumed := int64(unknownOffset)
		if pos, ok := stored[id]; ok {
			p.stored.Store(pos.Next)
			resumed = pos.Next
		}
		before := resumed
		if r, ok := read[id]; ok {
			before = r.before
		}
		if c := committed.EpochOffset().Offset; c >= 0 && c > before {
			resumed = max(resumed, c)
		}
		p.resumed.Store(resumed)
	}
}

// checkStored returns the stored offsets of the commands topic, checked
// against the topic's ID (checkTopicID) and, for the assigned partitions,
// against the log's ends and starts (checkLogEnds).
func (w *Worker) checkStored(ctx context.Context, assigned map[int32]kgo.Offset, sent map[int32]*offsetMove, read map[int32]storedRead) (map[int32]store.Position, error) {
	if err := w.checkTopicID(ctx); err != nil {
		return nil, err
	}
	stored, err := w.cfg.Store.Offsets(ctx, w.cfg.Group, w.cfg.Names.Commands)
	if err != nil {
		return nil, err
	}
	return stored, w.checkLogEnds(ctx, assigned, stored, sent, read)
}

// transient reports whether err, of resuming, may pass by itself: a lost
// connection, a server restarting, a leader election (PostgreSQL's, Kafka's
// retriable error codes, and what kgo would retry itself: a connection that
// died under the request, a cluster without a controller yet, a broker that
// metadata no longer lists), or a stale replica's move of a stored offset
// between resuming's read and its move back (errTakenOver: reading it
// again is the cure), or this replica's own earlier move whose answer was
// lost (errMovedBefore).
func transient(err error) bool {
	if errors.Is(err, store.ErrTransient) || errors.Is(err, errTakenOver) || errors.Is(err, errMovedBefore) {
		return true
	}
	if kerrs, ok := errors.AsType[*kerr.Error](err); ok {
		return kerrs.Retriable
	}
	_, network := errors.AsType[net.Error](err) // also a refused dial, which kgo's test leaves out
	return network || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		kgo.IsRetryableBrokerErr(err) || unknownBroker(err)
}

// unknownBroker reports whether err holds kgo's "unknown broker" error: a
// request for a broker that metadata no longer lists, as while it restarts,
// which kgo (v1.22) does not export nor count as retryable, only as worth
// trying on another broker. A sharded request (kadm's listings of offsets)
// returns it for the partitions that broker led.
func unknownBroker(err error) bool {
	switch e := err.(type) {
	case nil:
		return false
	case interface{ Unwrap() error }:
		if unknownBroker(e.Unwrap()) {
			return true
		}
	case interface{ Unwrap() []error }:
		if slices.ContainsFunc(e.Unwrap(), unknownBroker) {
			return true
		}
	}
	return err.Error() == "unknown broker"
}

// checkTopicID checks the commands topic's ID against the one its offsets
// were stored under (store.CheckTopicID), forgetting them when the topic was
// created again. A failure to read the ID that may pass (an election, a
// broker restarting, as when a recreation comes) is returned for resuming
// to retry; one that cannot (no Describe right on the topic) leaves the
// offsets unchecked, with a warning. The ID is used only when a majority
// of the brokers give it and none gives another (topicIDUnsure): a broker
// that has not caught up with a deletion or a creation yet gives another,
// and the read is made again, at most 5 s apart, until they agree or the
// partitions are revoked; so a lagging broker can neither have a live
// topic taken for a new one nor an old topic's offsets resumed on a new
// one. An ID the topic had before its current one
// (store.ErrRetiredTopicID) that a majority of the brokers give is no lag: the
// cluster is another, or an earlier one failed back to. It is refused,
// read again the same way, and logged at error level with what an
// operator can do. Each kind of hold is logged once per check.
func (w *Worker) checkTopicID(ctx context.Context) error {
	again := func(err error) bool {
		return errors.Is(err, store.ErrRetiredTopicID) || errors.As(err, new(*topicIDUnsure))
	}
	logged := map[string]bool{} // each kind of hold is logged once per check, not per read
	once := func(what string) bool {
		first := !logged[what]
		logged[what] = true
		return first
	}
	topic := w.cfg.Names.Commands
	return w.retry(ctx, zerolog.Nop(), "", again, func(ctx context.Context) error {
		id, err := w.topicID(ctx)
		if u, ok := errors.AsType[*topicIDUnsure](err); ok {
			if once(u.Error()) {
				w.log.Warn().Str("topic", topic).Strs("topic_ids", u.ids).Int("brokers_giving_it", u.giving).Int("brokers", u.brokers).
					Strs("brokers_not_giving_it", u.others).Msg(u.Error() + ": reading it again before the partitions resume")
			}
			return err
		}
		if err != nil && (transient(err) || ctx.Err() != nil) { // a stop or a revoke is not a reason to warn
			return err
		}
		if err != nil {
			w.log.Warn().Err(err).Msg("reading the commands topic's ID; its stored offsets are used unchecked")
			return nil
		}
		if id == "" {
			return nil
		}
		recreated, was, err := w.cfg.Store.CheckTopicID(ctx, w.cfg.Group, topic, id)
		if recreated {
			w.log.Warn().Str("topic", topic).Str("topic_id", id).Str("was", was).
				Msg("the commands topic was created again: its stored offsets are forgotten and its records applied from its start")
		}
		if e, ok := errors.AsType[*store.RetiredTopicIDError](err); ok && once("retired") {
			w.log.Error().Str("topic", topic).Str("topic_id", e.ID).Str("current", e.Current).
				Str("to_apply_it_as_a_new_topic", fmt.Sprintf("UPDATE consumer_topics SET retired_ids = array_remove(retired_ids, '%s') WHERE group_id = '%s' AND topic = '%s';",
					e.ID, strings.ReplaceAll(w.cfg.Group, "'", "''"), strings.ReplaceAll(topic, "'", "''"))).
				Msg("a majority of the brokers answer the commands topic's ID as one it had before its current one: this is another Kafka cluster, or an earlier one failed back to " +
					"(one database serves one cluster); its partitions are not resumed. Point the workers at the cluster of the current ID, or, to apply this topic " +
					"from its start as a new one, run the statement given")
		}
		return err
	})
}

// topicIDUnsure is topicID's error when the brokers that give an ID give
// different ones, or fewer than a majority of the brokers give the one
// given: one alone may be the one that lags.
type topicIDUnsure struct {
	ids             []string
	giving, brokers int
	others          []string // why each broker that gave none did not
}

func (e *topicIDUnsure) Error() string {
	if len(e.ids) > 1 {
		return "the brokers answer different IDs for the commands topic (one has not caught up with its deletion or creation yet): " +
			strings.Join(e.ids, ", ")
	}
	return fmt.Sprintf("only %d of the %d brokers give the commands topic's ID, not a majority", e.giving, e.brokers)
}

// topicID returns the commands topic's ID ("" when Kafka gives topics none:
// before 2.8) as a majority of the brokers
// known give it, none giving another (topicIDUnsure else): one broker
// alone may be one that has not caught up with a deletion or a creation,
// and its ID, taken, would have a live topic taken for a new one or an old
// topic's offsets resumed on a new one. A broker that cannot be reached,
// answers with an error, or gives no ID (an older version, during an
// upgrade) contradicts nobody but does not count towards the majority;
// when none gives an ID, that is the answer (every broker that answered
// gave none), else a broker's error is the read's.
func (w *Worker) topicID(ctx context.Context) (string, error) {
	topic := w.cfg.Names.Commands
	brokers := w.cl.DiscoveredBrokers()
	askers := make([]kmsg.Requestor, 0, len(brokers))
	for _, b := range brokers {
		askers = append(askers, b)
	}
	if len(askers) == 0 { // no metadata yet: the seeds
		askers = append(askers, w.cl)
	}
	// A broker's name for the log: kgo's Broker does not say its node ID;
	// an unreachable one's error names its address.
	name := func(i int) string { return fmt.Sprintf("broker %d of %d", i+1, len(askers)) }
	type answer struct {
		id  string
		err error
	}
	answers := make([]answer, len(askers))
	var wg sync.WaitGroup
	for i, r := range askers {
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, topicIDAskTimeout)
			defer cancel()
			answers[i].id, _, answers[i].err = describeTopic(actx, r, topic)
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		return "", fmt.Errorf("reading the ID of %s: %w", topic, ctx.Err())
	}
	unsure := &topicIDUnsure{brokers: len(askers)}
	var refused, unreached error
	noID := 0
	for i, a := range answers {
		switch {
		case a.err == nil && a.id == "":
			noID++
			unsure.others = append(unsure.others, name(i)+": gives no topic IDs")
		case a.err == nil:
			unsure.giving++
			if !slices.Contains(unsure.ids, a.id) {
				unsure.ids = append(unsure.ids, a.id)
			}
		case errors.As(a.err, new(*kerr.Error)):
			refused = cmp.Or(refused, a.err)
			unsure.others = append(unsure.others, name(i)+": "+a.err.Error())
		default:
			unreached = cmp.Or(unreached, a.err)
			unsure.others = append(unsure.others, name(i)+": "+a.err.Error())
		}
	}
	slices.Sort(unsure.ids)
	switch {
	case len(unsure.ids) > 1 || len(unsure.ids) == 1 && 2*unsure.giving <= unsure.brokers:
		return "", unsure
	case len(unsure.ids) == 1:
		return unsure.ids[0], nil
	case noID > 0 && refused == nil:
		return "", nil
	case refused != nil:
		return "", fmt.Errorf("reading the ID of %s: %w", topic, refused)
	}
	return "", fmt.Errorf("reading the ID of %s: no broker answered: %w", topic, unreached)
}

// topicIDAskTimeout bounds topicID's wait for one broker: one that does not
// answer within it is left out, not waited for.
const topicIDAskTimeout = 5 * time.Second

// describeTopic reads topic's ID ("" where Kafka gives topics none) and
// partition count from a broker, not from kgo's metadata cache, which
// kadm's listings answer from: up to kgo.MetadataMinAge (5 s) old, it may
// still hold a deleted topic's ID.
func describeTopic(ctx context.Context, r kmsg.Requestor, topic string) (id string, partitions int, err error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(ctx, r)
	if err != nil {
		return "", 0, err
	}
	i := slices.IndexFunc(resp.Topics, func(t kmsg.MetadataResponseTopic) bool { return t.Topic != nil && *t.Topic == topic })
	if i < 0 {
		return "", 0, kerr.UnknownTopicOrPartition
	}
	t := resp.Topics[i]
	if err := kerr.ErrorForCode(t.ErrorCode); err != nil {
		return "", 0, err
	}
	if t.TopicID != ([16]byte{}) {
		id = kadm.TopicID(t.TopicID).String()
	}
	return id, len(t.Partitions), nil
}

func (w *Worker) assigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.markJoined()
	if w.halted.Err() != nil {
		// Stopped for good (stopAll waits for the partitions it took):
		// under KIP-848 assignments come with heartbeats until Close,
		// and a rejoin (watchPostgres) may land as Run ends.
		return
	}
	for _, p := range assigned[w.cfg.Names.Commands] {
		if old, ok := w.parts[p]; ok && old.ctx.Err() == nil {
			continue
		}
		part := w.newPartition(w.serving(), p)
		part.lane = w.leastUsedLane()
		w.parts[p] = part
		w.log.Info().Int32("partition", p).Msg("partition assigned")
	}
}

// assignedBefore lists the partitions owned that were assigned before
// stall epoch (stallGate): also one stopped for a restart (takenOver),
// which another replica's takeover suggests is another's now; one let go
// has left w.parts.
func (w *Worker) assignedBefore(epoch uint64) []int32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ids []int32
	for id, p := range w.parts {
		if p.stallEpoch < epoch {
			ids = append(ids, id)
		}
	}
	return ids
}

// leastUsedLane is the applier with the fewest owned partitions; w.mu held.
// A partition keeps its lane while owned, so its records stay in order.
func (w *Worker) leastUsedLane() int {
	use := make([]int, len(w.lanes))
	for _, p := range w.parts {
		if p.ctx.Err() == nil {
			use[p.lane]++
		}
	}
	return slices.Index(use, slices.Min(use))
}

// revoked stops the partitions after their records polled so far are applied
// (or dropped from a batch that keeps failing: their next owner starts from
// the stored offset).
func (w *Worker) revoked(ctx context.Context, _ *kgo.Client, revoked map[string][]int32) {
	w.letGo(revoked, false)
	w.commitMarks(ctx)
}

// commitMarksTimeout bounds commitMarks, which holds up a rebalance or a
// leave.
const commitMarksTimeout = 5 * time.Second

// commitMarks commits the Kafka offsets marked (past the records applied),
// at each revoke, a leave's included (kgo revokes everything as the member
// leaves, its commits in flight cancelled first, so this one waits for
// none of them): kgo, given a revoke callback of ours, commits nothing at
// a revoke, and drops the revoked partitions' marks once it returns, so
// without this
// the group's offsets of a partition that moved (or of all, at a leave)
// would lag by up to the autocommit interval's records for good, and lag
// tooling (kafka-consumer-groups) would show lag that is not there. The
// stored offsets in PostgreSQL are what the worker resumes from; these are
// for that tooling only, so a failure is logged and nothing else.
func (w *Worker) commitMarks(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitMarksTimeout)
	defer cancel()
	if err := w.cl.CommitMarkedOffsets(ctx); err != nil {
		w.log.Debug().Err(err).Msg("committing the group offsets marked")
	}
}

// lost stops the partitions of a group session that ended in error. kgo
// calls it for any such end, not only missed heartbeats: the coordinator no
// longer knowing this member or its generation, a fenced instance ID,
// heartbeats that could not reach the coordinator within their retry
// timeout, a failed join or sync, an assignment whose resume failed
// (resumeFromStore). Another member may own them already, applying from
// the stored offset, so the records polled for them are dropped, not
// applied (a batch in flight may still commit), and their relays are not
// waited for. Heartbeats are not the only way a stale member learns it was
// dropped: kgo answers an offset commit refused for an unknown member or
// generation by rejoining, and the partitions the new assignment does not
// give back are then revoked (revoked: their records polled go to the
// applier, whose offset guard keeps each applied once, takenOver), not
// lost.
func (w *Worker) lost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	w.letGo(lost, true)
}

// letGo stops the partitions: once their records polled are applied, and
// their relays have returned; or, when lost, once their records polled are
// dropped.
func (w *Worker) letGo(parts map[string][]int32, lost bool) {
	var stopping []*partition
	w.mu.Lock()
	for _, p := range parts[w.cfg.Names.Commands] {
		if part, ok := w.parts[p]; ok {
			// Another's already when lost, or when let go while a stall
			// holds it (a rejoin after a refused commit revokes what the
			// group gave away): flagged before it leaves w.parts, which
			// may end the stall (stallGate.confirm), and its relay stopped
			// at once, so that writers meanwhile leave marks for the new
			// owner instead of handing it rows it will not publish.
			_, held := w.stall.holds(part.id, part.stallEpoch)
			part.revoke() // first: a batch that finds it lost drops it (letGo)
			if lost || held {
				part.lost.Store(true)
				part.stopRelay()
			}
			stopping = append(stopping, part)
			delete(w.parts, p)
		}
	}
	// A replica that withdrew (watchPostgres) cannot apply the records it
	// polled: they are dropped as when lost, but its relays, which may
	// still publish rows read before, are waited for. Told under w.mu: a
	// rejoin, once w.parts is empty, makes a new serving context.
	drop := lost || w.Withdrawn()
	w.mu.Unlock()
	for _, part := range stopping {
		if drop || part.lost.Load() {
			w.drop(part)
		}
	}
	for _, part := range stopping {
		w.awaitApplied(part)
		part.cancel()
	}
	// Let go once the relays have returned: a publish they left behind
	// would otherwise land after the next owner's (outbox.Config.HandOverWait).
	how := "partition revoked"
	switch {
	case lost:
		how = "partition lost"
	case drop:
		how = "partition given up (PostgreSQL unreachable)"
	}
	for _, part := range stopping {
		if !lost {
			<-part.finished
		}
		w.log.Info().Int32("partition", part.id).Msg(how)
	}
}

// awaitApplied waits until the segments of part, being let go, are
// applied or dropped. While a stall is not over (stallGate) they are
// dropped instead, for their partition's next owner to apply from the
// stored offset: a batch queued ahead of them may be held, and a revoke
// waiting for it would hold up the group's rebalance, and so the very
// answer the hold waits for.
func (w *Worker) awaitApplied(part *partition) {
	applied := make(chan struct{})
	go func() { part.pending.Wait(); close(applied) }()
	for {
		changed, stalled := w.stall.stalling()
		if stalled {
			w.drop(part)
			<-applied
			return
		}
		select {
		case <-applied:
			return
		case <-changed:
		}
	}
}

// drop releases the segments queued for p and those submitted later: its
// records are no longer applied here.
func (w *Worker) drop(p *partition) {
	p.dropped.Store(true) // before discard, so that no submit queues one after it
	w.lanes[p.lane].discard(p)
}

// stopAll stops every partition; the applier is done.
func (w *Worker) stopAll() {
	w.halt()
	w.mu.Lock()
	all := w.parts
	w.parts = map[int32]*partition{}
	w.mu.Unlock()
	for _, part := range all {
		part.cancel()
	}
	w.wg.Wait()
}

// retry runs attempt until it succeeds, fails in a way retriable (nil:
// every way) does not retry, or ctx ends, at most 5 s apart, logging each
// failure to log as failed: what fails is most likely the broker, in the
// middle of its election, or PostgreSQL restarting. It returns the last
// failure.
func (w *Worker) retry(ctx context.Context, log zerolog.Logger, failed string, retriable func(error) bool, attempt func(context.Context) error) error {
	for n := 1; ; n++ {
		err := attempt(ctx)
		if err == nil || ctx.Err() != nil || retriable != nil && !retriable(err) {
			return err
		}
		delay := store.Backoff(250*time.Millisecond, 5*time.Second, n)
		log.Error().Err(err).Dur("retry_in", delay).Msg(failed)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

type noMetrics struct{}

func (noMetrics) Batch(int, time.Duration)              {}
func (noMetrics) Command(string, string, time.Duration) {}
func (noMetrics) Events(string, []topics.Event)         {}
func (noMetrics) DeadLettered(string)                   {}
func (noMetrics) DataLoss()                             {}
func (noMetrics) PartitionRestarted()                   {}
