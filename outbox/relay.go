package outbox

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/internal/failstreak"
	"github.com/omninode/lockworker/kafkapubsub"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// Config configures a [Relay]. Zero values take the defaults given.
type Config struct {
	// Publisher publishes the records. Required. Publish must return only
	// once Kafka acknowledged every message (kafkapubsub.Publisher does),
	// because the rows are deleted when it returns nil.
	Publisher message.Publisher
	// Pool reaches the database holding the outbox. Required.
	Pool *pgxpool.Pool
	// KeyMetadata is the metadata entry the publisher turns into the record
	// key: the publisher's own KeyMetadata. Default
	// kafkapubsub.DefaultKeyMetadata.
	KeyMetadata string
	// BatchSize is how many rows one query selects at most, of a
	// partition. Default 500. A query also stops at maxHeldBytes of keys,
	// values and headers, its partitions sharing them (selectRows).
	BatchSize int
	// PollInterval is how often a partition reads the table even when
	// everything was handed over: the fallback for rows no slot or Wake
	// announced. Default 1 s.
	PollInterval time.Duration
	// MaxAttempts is how often a row may fail with a topic that cannot be
	// written before the topic's waiting rows are parked (RELAY_MAX_ATTEMPTS).
	// Default 5. A record Kafka refuses for good is parked at its first
	// refusal, whatever this says.
	MaxAttempts int
	// ParkFor is how long the rows of a topic that cannot be written stay
	// parked (newer rows of it waiting behind them) before the next try, by
	// the database's clock; and how long a topic's creation may be refused
	// INVALID_REPLICATION_FACTOR, with no other outcome, before its rows
	// are parked. Default 10 min.
	ParkFor time.Duration
	// PublishTimeout is the messages' context deadline: kgo fails records
	// past it when it safely can, which an idempotent client cannot do for
	// a request that got no answer (see the package doc). Default 30 s.
	// Keep it above the client's kgo.RecordDeliveryTimeout, if any, so the
	// client's error wins.
	PublishTimeout time.Duration
	// HandOverWait is how long Run, once its context ended, waits for the
	// publishes it left behind (a request Kafka has not answered yet)
	// before it returns: the worker lets the partition go after Run, so its
	// next owner, which publishes the same rows and later ones, does not
	// start before them, and a lock's records land in order (the lock
	// state topic's compaction keeps the last one to land). The rows Kafka
	// acknowledged of them within it are deleted before Run returns, so
	// the next owner does not publish them again. A publish still
	// unanswered after it may land after the next owner's records, and
	// its rows are published again.
	// Default 10 s; negative: no wait.
	HandOverWait time.Duration
	// OrderAcrossTopics trades throughput for order across topics. Default
	// false: each batch publishes all rows of a topic in one call and the
	// topics' calls run concurrently; order holds per topic (hence per key)
	// only, which is all a Kafka consumer can observe reliably anyway. True:
	// consecutive rows of one topic go in one Publish call and calls follow
	// each other, so records are acknowledged in id order across all topics,
	// at one Kafka round trip per run (reply and lifecycle rows interleave,
	// so runs are short: several times slower).
	OrderAcrossTopics bool
	// DeleteDelay is how long acknowledged rows may wait for the next
	// pass that reads the table, whose query deletes them in the same round
	// trip as it selects, before they are deleted on their own. Default
	// 1 s, PollInterval's default: passes over rows handed over read
	// nothing, so a delay shorter than PollInterval deletes in a
	// transaction of its own, per partition and delay, what the periodic
	// read would have deleted anyway (at 16 clients and 100 ms, a DELETE
	// transaction for every four applier transactions; docs/performance.md).
	// Longer-waiting rows cost a crash about a second more of records
	// published again, and count in Backlog meanwhile.
	DeleteDelay time.Duration
	// RetryBase and RetryMax shape every backoff: after failed publishes
	// and database errors. Defaults store.DefaultRetryBase
	// (100 ms) and store.DefaultRetryMax (5 s).
	RetryBase, RetryMax time.Duration
	// Logger gets failures, parking and hand-overs. Default: no logs.
	Logger zerolog.Logger
	// OnPublished, when set, is told after each batch how many rows were
	// acknowledged, and the age of the oldest of them (for metrics); they
	// are deleted with the next pass's query or when the partition rests.
	// It runs on the partition's goroutine: keep it quick.
	OnPublished func(n int, oldest time.Duration)
	// OnParked, when set, is told each time rows are parked, how many and
	// why (Classify's reason: the Kafka error's name, INVALID_REPLICATION_FACTOR
	// included, or UNREADABLE_HEADERS), for metrics: by a failed publish, and by a
	// read, the rows a parked topic got during its park (its reason). It
	// runs on the partition's goroutine: keep it quick.
	OnParked func(reason string, rows int)

	// noTakeoverReads: a run publishes what it is handed from its first
	// read on (tests: export_test.go).
	noTakeoverReads bool
	// awaitWarnAfter is how long the table reads wait for transactions to
	// end before the relay says which. Default 10 s; tests shorten it.
	awaitWarnAfter time.Duration
	// parkChunk is how many rows one statement of a park updates. 0:
	// parkChunk; tests lower it.
	parkChunk int
	// unparkChunk is how many rows a read puts back in the walked index or
	// takes out of it. 0: unparkChunk; tests lower it.
	unparkChunk int
	// readBytes is how many bytes of rows a read takes, its partitions
	// together. 0: maxHeldBytes; tests lower it.
	readBytes int
}

// Relay publishes outbox rows. One Relay serves every partition of a
// process; its methods are safe for concurrent use.
type Relay struct {
	cfg Config
	log zerolog.Logger

	mu    sync.Mutex
	parts map[int32]*partition

	// handed and probed are the bytes of rows the partitions hold
	// together in their hand-off queues and in their probes: one bound
	// each for the process, however many partitions it runs (see
	// maxHeldBytes).
	handed, probed budget

	// The partitions' passes select and delete through these, so passes
	// woken together share their queries.
	selects *merger[selectReq, selected]
	deletes *merger[[]rowRef, struct{}]

	// sleep is rest; tests replace it to see the waits Run chooses.
	sleep func(ctx context.Context, p *partition, wait time.Duration, wake <-chan struct{}) (woken bool)
}

// partition is the relay's state for one commands partition.
type partition struct {
	id   int32
	wake chan struct{} // capacity 1: wake-ups coalesce
	// works is signalled, besides wake, when a writer's transaction ended
	// (Fill, Dirty; not Abandon, whose attempt failed) and by Wake: the
	// database answers, so it ends a database backoff too (Run).
	works chan struct{}
	run   chan struct{} // capacity 1: held by the one Run of this partition
	// dbStreak is the running Run's streak of database failures, its
	// passes' and deleteNow's: Run's goroutine alone, where rest and
	// deleteNow run, uses it.
	dbStreak failstreak.Streak

	lock chan struct{} // capacity 1: one pass at a time; guards the fields below
	// parked are the topics whose rows wait behind a park, as the last read
	// of the table found them (or a park since): the table says, so an
	// operator's re-drive counts from the next read.
	parked        map[string]bool
	parksRead     bool             // a read found which topics are parked
	blocked       map[string]block // topic -> in-memory retry backoff
	acked         []rowRef         // acknowledged by Kafka, not yet deleted
	ackedAt       time.Time        // when acked became non-empty
	kafkaFailures int              // consecutive pauses for Kafka being unavailable
	pauseUntil    time.Time
	lastRead      time.Time // when a pass last read the table
	// hold is the running RunHeld's: every publish waits for it.
	hold atomic.Pointer[func(context.Context) error]
	// awayTopic is the topic whose publish failed last for Kafka being
	// away, with no success since, in this pass or an earlier one (a pass
	// publishing one commit's rows handed over may try one topic only):
	// another topic failing so next pauses the partition.
	awayTopic string
	// Passes read the table until a snapshot's xmin reaches awaitXmin
	// (awaitDue); 0: none. awaitSince is when that began, awaitWarned
	// whether it was logged as long.
	awaitXmin   int64
	awaitSince  time.Time
	awaitWarned bool

	// left are the publishes passes left behind when their context ended
	// (await): Run waits for them before it returns, and deletes the rows
	// Kafka acknowledged of them (handOver).
	left leftBehind
	// probes are the current Run's probes (probe.go); acks counts the
	// acknowledged publishes, so that a failure tells whether Kafka
	// answered meanwhile: a probe's, or a unit's after setAside's halves.
	probes *probes
	acks   uint64

	// readTable asks the next pass to read the table rather than publish
	// only the rows handed over: set by Wake, when Run starts, and after
	// a failure.
	readTable atomic.Bool
	// awaitDue asks passes to read the table until every transaction
	// that has a transaction id now has ended: the next read takes an id
	// of its own, later than all of theirs, and awaitXmin is set past it.
	// Set when Run starts (a transaction then may hold a slot of an
	// earlier run, here or on the replica that owned the partition, and
	// left no mark) and by Slot.Abandon (its transaction may still commit).
	// Their rows reach the table only, maybe after the read that went past
	// their slot, and a later transaction's on the same lock, handed over,
	// must not go first. A snapshot's xmax would not do: it is one past
	// the last transaction completed, and a writer whose COMMIT PostgreSQL
	// holds with every later one (a synchronous standby, an fsync stall)
	// may have an id at or past it, which no snapshot then shows running.
	awaitDue atomic.Bool

	// The hand-off queue (handoff.go), guarded by hmu: writers reserve
	// and resolve slots while a pass runs.
	hmu     sync.Mutex
	running bool // Run is running and its ctx not done: slots may be reserved
	seq     uint64
	slots   []*Slot
	// filter holds the ids reads of the table took, each with the seq of
	// the last slot reserved before its read: a slot up to that seq leaves
	// the row out. reads lists those reads, oldest first, so that a read's
	// ids are dropped once every slot reserved before it has been taken,
	// not only when the queue is found empty (never, while a table that
	// must be read at every pass, awaitXmin, and commits go on).
	filter map[int64]uint64
	reads  []filterRead
	// held counts the rows of filled slots not taken yet, heldBytes their
	// keys', values' and headers' bytes, which handed (the relay's budget)
	// counts too, with the other partitions'; a slot filled beyond maxHeld
	// rows (2*handedBatches*BatchSize: 10,000 by default) or beyond the
	// budget is resolved dirty instead, so a pass stuck in a publish while
	// commits go on does not hold every row in memory too (the table has
	// them). The bytes matter for large rows: dead-letter copies of up to
	// DEAD_LETTER_MAX_BYTES each would reach hundreds of MiB within the row
	// bound. The first slot a partition holds is held whatever its size
	// and whatever the others hold (its writer holds its rows anyway): a
	// partition whose other slots are resolved dirty, the budget held by
	// others, still has a pass publish that one and read the rest.
	held, maxHeld int
	heldBytes     int
	handed        *budget
	runs          uint64 // Runs started, so a slot of an earlier one is told apart
}

// block holds a topic back after a failed publish until its backoff ends,
// or while a probe of it runs.
type block struct {
	at, until time.Time
	failures  int  // consecutive transient failures, for the backoff
	probing   bool // a probe publishes its rows (probe.go)
	// replicasSince is when the topic's creation was first refused for
	// its replicas (ReasonReplicas) with no other outcome since; zero: it
	// was not.
	replicasSince time.Time
}

// waiting says whether the topic is held back at now.
func (b block) waiting(now time.Time) bool { return b.probing || b.until.After(now) }

type row struct {
	rowRef
	topic               string
	key, value, headers []byte
	// at is when the row was committed, as near as this process knows:
	// when its slot was filled, or its created_at for a row read from the
	// table; the publish latency counts from it.
	at time.Time
}

// rowRef is what the relay deletes, parks or counts an attempt of a row
// by: its id and its created_at. After a failover that lost rows, and the
// sequence's advance with them, PostgreSQL hands their ids to new rows,
// which a delete of the lost rows by id alone would take unpublished; a
// new row's created_at, set at its insert on the new primary, is not the
// lost row's.
type rowRef struct {
	id      int64
	created time.Time
}

// maxConcurrentTopics bounds the Publish calls of one partition in flight
// when topics are published concurrently.
const maxConcurrentTopics = 16

// New returns a relay for cfg.
func New(cfg Config) (*Relay, error) {
	if cfg.Publisher == nil {
		return nil, errors.New("outbox: Config.Publisher is required")
	}
	if cfg.Pool == nil {
		return nil, errors.New("outbox: Config.Pool is required")
	}
	if cfg.KeyMetadata == "" {
		cfg.KeyMetadata = kafkapubsub.DefaultKeyMetadata
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 500
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.ParkFor <= 0 {
		cfg.ParkFor = 10 * time.Minute
	}
	if cfg.PublishTimeout <= 0 {
		cfg.PublishTimeout = 30 * time.Second
	}
	if cfg.DeleteDelay <= 0 {
		cfg.DeleteDelay = time.Second
	}
	if cfg.HandOverWait == 0 {
		cfg.HandOverWait = 10 * time.Second
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = store.DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = store.DefaultRetryMax
	}
	if cfg.awaitWarnAfter <= 0 {
		cfg.awaitWarnAfter = 10 * time.Second
	}
	r := &Relay{
		cfg:   cfg,
		log:   cfg.Logger.With().Str("component", "outbox").Logger(),
		parts: map[int32]*partition{},
	}
	r.handed.max, r.probed.max = maxHeldBytes, maxHeldBytes
	r.selects = &merger[selectReq, selected]{run: r.selectRows, timeout: queryTimeout}
	r.deletes = &merger[[]rowRef, struct{}]{run: r.deleteRows, timeout: queryTimeout}
	r.sleep = r.rest
	return r, nil
}

// queryTimeout bounds the relay's merged queries, which do not end with the
// context of the pass that runs them (it serves other passes too).
const queryTimeout = 10 * time.Second

func (r *Relay) backoff(attempt int) time.Duration {
	return store.Backoff(r.cfg.RetryBase, r.cfg.RetryMax, attempt)
}

// part returns the state of a partition, creating it on first use.
func (r *Relay) part(id int32) *partition {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.parts[id]
	if !ok {
		p = &partition{
			id:      id,
			wake:    make(chan struct{}, 1),
			works:   make(chan struct{}, 1),
			run:     make(chan struct{}, 1),
			lock:    make(chan struct{}, 1),
			parked:  map[string]bool{},
			blocked: map[string]block{},
			probes:  &probes{},
			maxHeld: 2 * handedBatches * r.cfg.BatchSize,
			handed:  &r.handed,
		}
		r.parts[id] = p
	}
	return p
}

// Wake makes the partition's Run read the table now, for tests: no writer
// needs it (one without a slot leaves a mark instead, see Reserve). It
// never blocks, and does nothing for a partition this relay never ran.
func (r *Relay) Wake(partition int32) {
	r.mu.Lock()
	p := r.parts[partition]
	r.mu.Unlock()
	if p != nil {
		p.readTable.Store(true)
		p.signal()
		p.signalWorks()
	}
}

func (p *partition) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *partition) signalWorks() {
	select {
	case p.works <- struct{}{}:
	default:
	}
}

// Run publishes the partition's rows until ctx is done, then returns nil.
// Failures never end it: they are logged and retried (see the package doc).
// A second Run of the same partition waits until the first has returned,
// so a quick revoke and re-assign never runs two loops at once.
func (r *Relay) Run(ctx context.Context, partition int32) error {
	return r.RunHeld(ctx, partition, nil)
}

// RunHeld is Run whose every call to the publisher first waits for hold
// (nil: none) to return nil; an error (ctx's, or the partition let go)
// ends the pass, its rows not published left in the table, counted as no
// failure. The worker holds a partition's publishes after a stall of its
// process until its group coordinator says it still has the partition.
func (r *Relay) RunHeld(ctx context.Context, partition int32, hold func(context.Context) error) error {
	p := r.part(partition)
	select {
	case p.run <- struct{}{}:
	case <-ctx.Done():
		return nil
	}
	defer func() { <-p.run }()
	defer r.handOver(ctx, p)

	// Another worker may have owned the partition meanwhile: forget local
	// backoffs (the first read finds the parked topics). The rows an
	// earlier Run got acknowledged but could not delete are deleted by the
	// first read: by rowRef, so a row that a failover gave one of their
	// ids is not taken.
	if !p.acquire(ctx) {
		return nil
	}
	p.blocked = map[string]block{}
	p.hold.Store(&hold) // atomic: a publish an earlier Run left running may still read it
	p.pauseUntil, p.kafkaFailures, p.awayTopic = time.Time{}, 0, ""
	p.dbStreak = failstreak.Streak{}
	p.awaitDue.Store(!r.cfg.noTakeoverReads)
	p.awaitXmin, p.awaitWarned = 0, false
	p.left.reset() // an earlier Run's were waited for up to HandOverWait: no longer
	p.readTable.Store(true)
	run := p.startHandoff()
	p.release()
	defer p.stopHandoff(run)
	defer r.endProbes(ctx, p)
	// Closed as soon as ctx ends, not only once Run returns, which a pass
	// waiting on the database may hold up to a query's bound: a writer
	// reserving meanwhile would get a slot no pass publishes, and leave no
	// mark for the partition's next owner, whose relay could then publish
	// a later transaction on the same lock, handed over, first.
	stopSlots := context.AfterFunc(ctx, func() { p.stopHandoff(run) })
	defer stopSlots()

	// A database that keeps failing (an outage) is retried after
	// RetryBase doubling to RetryMax, whatever PollInterval says, and
	// logged as a streak (p.dbStreak): its first error, then one line per
	// failstreak.DefaultEvery, and one when a pass's query works again.
	// committed says a commit ended this streak's backoff once already:
	// if the pass it brought failed too, the failure is the relay's own
	// (the writers commit), and a commit per retry would undo the
	// backoff, so the rest of the streak waits it out.
	committed := false
	for {
		// Only a writer's transaction ending from now on shows the
		// database answers after this pass's failure.
		select {
		case <-p.works:
		default:
		}
		res := r.drain(ctx, p, math.MaxInt64, false)
		if ctx.Err() != nil {
			r.deleteNow(ctx, p)
			return nil
		}
		wait, wake := r.cfg.PollInterval, p.wake
		switch {
		case res.dbErr != nil:
			n, ev := p.dbStreak.Fail(&r.log, res.dbErr)
			// Neither a topic's retry nor an ordinary wake-up (an
			// abandoned slot: a writer's COMMIT failing, as in an
			// outage) may defeat the backoff: their pass would read the
			// table too. A writer's commit ends it (works): the database
			// answers again, and the rows it hands over, and those
			// committed before, go out at once rather than after the
			// rest of up to RetryMax.
			wait, wake = r.backoff(n), p.works
			if committed {
				wake = nil
			}
			ev.Int32("partition", partition).Dur("retry_in", wait).Msg("outbox: database error")
		case res.queried:
			committed = false
			p.dbStreak.OK(&r.log).Int32("partition", partition).Msg("outbox: database works again")
			fallthrough
		default:
			// A pass with no query (a Kafka pause, rows handed over)
			// says nothing of the database: the streak goes on.
			if d, ok := p.nextRetry(time.Now()); ok && d < wait {
				wait = d
			}
		}
		if r.sleep(ctx, p, wait, wake) && res.dbErr != nil {
			committed = true
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// rest waits for a wake-up or for wait to pass, and says whether the wake-up
// ended it. Rows acknowledged before are deleted by the next pass; if none
// comes within DeleteDelay, or ctx ends, they are deleted here.
func (r *Relay) rest(ctx context.Context, p *partition, wait time.Duration, wake <-chan struct{}) (woken bool) {
	timer := time.NewTimer(wait)
	defer timer.Stop()
	var linger <-chan time.Time
	if p.acquire(ctx) {
		if len(p.acked) > 0 && r.cfg.DeleteDelay < wait {
			lt := time.NewTimer(r.cfg.DeleteDelay)
			defer lt.Stop()
			linger = lt.C
		}
		p.release()
	}
	for {
		select {
		case <-ctx.Done():
			r.deleteNow(ctx, p)
			return false
		case <-linger:
			linger = nil
			r.deleteNow(ctx, p)
		case <-wake:
			return true
		case <-timer.C:
			return false
		}
	}
}

// deleteNow takes the partition's lock, even when ctx is done (unless for
// ErrUnreachable), and deletes its acknowledged rows. A failure leaves them
// for the next pass, and is one more of Run's streak of database failures:
// in an outage each rest tries it, and a line each would flood the log.
func (r *Relay) deleteNow(ctx context.Context, p *partition) {
	lctx, cancel := beyond(ctx, queryTimeout)
	defer cancel()
	if !p.acquire(lctx) {
		return
	}
	defer p.release()
	if err := r.deleteAcked(ctx, p); err != nil {
		_, ev := p.dbStreak.Fail(&r.log, err)
		ev.Int32("partition", p.id).Msg("outbox: deleting published rows failed; the next pass deletes them")
	}
}

// DrainOnce publishes the partition's rows that are there now (not rows
// committed after it started) and returns how many it published, for
// tests, where no Run of the partition runs (it takes the partition's
// marks, as a read of the table does). Unlike
// Run it does not wait for backoffs: every topic that is not parked gets one
// try. The error joins the first publish failure and any database error;
// failures are accounted (attempts, parking) as in Run.
func (r *Relay) DrainOnce(ctx context.Context, partition int32) (int, error) {
	p := r.part(partition)
	var upTo int64
	err := r.cfg.Pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM outbox WHERE source_partition = $1`, partition).Scan(&upTo)
	if err != nil {
		return 0, fmt.Errorf("outbox: reading partition %d: %w", partition, err)
	}
	res := r.drain(ctx, p, upTo, true)
	return res.published, errors.Join(res.dbErr, res.pubErr)
}

type passResult struct {
	published int
	more      bool  // the batch was full: select again
	dbErr     error // the database failed: back off
	queried   bool  // a query of the database succeeded: it works
	pubErr    error // the first publish failure, already handled
}

// drain runs passes until no full batch is left. force ignores in-memory
// backoffs that existed when it started.
func (r *Relay) drain(ctx context.Context, p *partition, upTo int64, force bool) (res passResult) {
	if !p.acquire(ctx) {
		res.pubErr = ctx.Err()
		return res
	}
	defer p.release()
	// Acknowledged rows are deleted by the next pass's query (or by Run
	// when none comes soon); DrainOnce has no next pass.
	defer func() {
		if force {
			if err := r.deleteAcked(ctx, p); err != nil && res.dbErr == nil {
				res.dbErr = err
			}
		}
	}()
	// Held, a pass neither publishes nor reads the table, whose read takes
	// the marks other replicas' writers left for the partition's owner,
	// nor settles its probes, whose failures write attempts and parks to
	// rows another replica may own already: a pass after the hold settles
	// them, or endProbes, as Run ends, keeps what Kafka acknowledged.
	if err := p.waitHold(ctx); err != nil {
		res.pubErr = err
		p.readTable.Store(true)
		return res
	}
	// A probe's failure is its topic's alone: it stops no publish here.
	probed := r.settleProbes(ctx, p)
	res.published, res.dbErr = probed.published, probed.dbErr
	if res.dbErr != nil {
		return res
	}
	var since time.Time
	if force {
		since = time.Now()
	} else if time.Now().Before(p.pauseUntil) {
		return res
	}
	handed, dirty := p.takeSlots()
	if !force && !dirty && !r.mustRead(p) {
		// Only rows handed over since the last pass: no query. A large
		// transaction's (a cleanup's tombstones) go a few batches at a
		// time, as the messages and records of a publish cost several
		// times the rows (docs/performance.md). A failure stops the rest,
		// which must not overtake it: the table has them. Rows of a
		// parked or backing-off topic stay there too, behind that topic's
		// earlier rows, until a read publishes them all; so do those of a
		// topic whose publish became a probe in an earlier batch.
		handed = slices.DeleteFunc(handed, p.waits)
		for len(handed) > 0 && res.pubErr == nil && res.dbErr == nil {
			n := min(len(handed), handedBatches*r.cfg.BatchSize)
			pr := r.publishRows(ctx, p, handed[:n], false, true)
			res.published += pr.published
			res.pubErr, res.dbErr = pr.pubErr, pr.dbErr
			handed = slices.DeleteFunc(handed[n:], p.waits)
		}
		if len(p.acked) > 0 && (len(p.acked) >= r.cfg.BatchSize || time.Since(p.ackedAt) >= r.cfg.DeleteDelay) {
			err := r.deleteAcked(ctx, p)
			res.queried = res.queried || err == nil
			res.dbErr = cmp.Or(res.dbErr, err)
		}
		if res.pubErr != nil || res.dbErr != nil {
			p.readTable.Store(true) // what failed is in the table
		}
		return res
	}
	// The table holds the handed rows too: they were committed.
	p.readTable.Store(false) // a Wake from now on asks again
	p.lastRead = time.Now()
	defer func() {
		if res.dbErr != nil || res.pubErr != nil || res.more {
			p.readTable.Store(true)
		}
	}()
	for {
		// Every pass, not only the first: the hold may have begun while
		// the previous pass published, and this pass's read would take
		// the marks left for the partition's new owner.
		if err := p.waitHold(ctx); err != nil {
			res.pubErr = cmp.Or(res.pubErr, err)
			res.more = false
			return res
		}
		pr := r.pass(ctx, p, upTo, since, !force)
		res.published += pr.published
		res.more = pr.more
		res.queried = res.queried || pr.queried
		if res.pubErr == nil {
			res.pubErr = pr.pubErr
		}
		if pr.dbErr != nil {
			res.dbErr = pr.dbErr
			return res
		}
		if !pr.more || ctx.Err() != nil {
			return res
		}
	}
}

// mustRead says whether the next pass reads the table: when asked to, when
// a topic's backoff has ended (its rows wait in the table, the topic's
// newer ones behind them), until the transactions that had an id when Run
// started or a slot was abandoned have ended (partition.awaitDue), and every
// PollInterval, for rows committed by writers that reserved no slot
// (another replica's cleanup or session end, writing for a
// lock of this partition), and for the end of a park (by the database's
// clock, or an operator's). While a topic is parked or backs off, passes
// publish the other topics' rows handed over (partition.waits) rather than
// read the table each time, a query per commit.
func (r *Relay) mustRead(p *partition) bool {
	now := time.Now()
	return p.readTable.Load() || p.retryDue(now) || p.awaitDue.Load() || p.awaitXmin > 0 ||
		now.Sub(p.lastRead) >= r.cfg.PollInterval
}

// retryDue says whether a topic's backoff has ended by now: a read retries
// it.
func (p *partition) retryDue(now time.Time) bool {
	for _, b := range p.blocked {
		if !b.waiting(now) {
			return true
		}
	}
	return false
}

// waits says whether x's topic is parked or backs off: x stays in the
// table, where a read takes it after its topic's earlier rows.
func (p *partition) waits(x row) bool {
	_, blocked := p.blocked[x.topic]
	return blocked || p.parked[x.topic]
}

// handedBatches is how many of Config.BatchSize rows handed over one
// publish takes at most.
const handedBatches = 10

// maxHeldBytes bounds the bytes (keys, values, headers) of the rows the
// relay's hand-off queues hold, its partitions together (Relay.handed), of
// those its probes hold, together too (Relay.probed), and of those one read
// of the table takes, its partitions together (selectRows): a pass holds
// several times its rows (the values decoded, the messages, the produce
// requests), and 500 dead-letter copies of up to DEAD_LETTER_MAX_BYTES
// would be hundreds of MiB. A bound per partition would grow with the
// partitions a process runs (16 or 64 times 32 MiB, far past the worker's
// GOMEMLIMIT) when one topic's publishes hang while commits of large rows
// go on. One per process keeps a single partition's room as it was (a
// cleanup's rows handed over at once) and costs the others, while it is
// full, only reads of the table instead of rows handed over, and probes
// beyond each partition's first published in their passes.
const maxHeldBytes = 32 << 20

// budget counts bytes of rows the partitions of a relay hold together, up
// to max. Writers' goroutines take from it on every commit they hand over
// (Slot.resolve), under their partition's lock only: hence an atomic, not
// the relay's lock.
type budget struct {
	used atomic.Int64
	max  int64
}

// take counts size bytes more held, unless that goes past max and always is
// false, and says whether it did.
func (b *budget) take(size int, always bool) bool {
	for {
		used := b.used.Load()
		if !always && used+int64(size) > b.max {
			return false
		}
		if b.used.CompareAndSwap(used, used+int64(size)) {
			return true
		}
	}
}

// give counts size bytes taken no longer held.
func (b *budget) give(size int) { b.used.Add(-int64(size)) }

// acquire takes the partition's lock, or gives up when ctx is done.
func (p *partition) acquire(ctx context.Context) bool {
	select {
	case p.lock <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (p *partition) release() { <-p.lock }

// nextRetry is how long until a backoff of the partition ends, if any is
// running.
func (p *partition) nextRetry(now time.Time) (time.Duration, bool) {
	p.acquire(context.Background())
	defer p.release()
	var next time.Time
	consider := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	consider(p.pauseUntil)
	for _, b := range p.blocked {
		if !b.probing { // its probe wakes the partition when it returns
			consider(b.until)
		}
	}
	if next.IsZero() {
		return 0, false
	}
	return next.Sub(now), true
}

// pass deletes the rows acknowledged before, selects one batch of the
// table and publishes it (probe: a topic Kafka was away for, in a probe);
// what it got acknowledged is deleted by the next pass's query or when
// drain ends.
func (r *Relay) pass(ctx context.Context, p *partition, upTo int64, since time.Time, probe bool) passResult {
	rows, more, err := r.selectBatch(ctx, p, upTo, since)
	if err != nil {
		return passResult{dbErr: err}
	}
	p.selected(rows)
	res := r.publishRows(ctx, p, rows, more, probe)
	res.queried = true
	return res
}

// publishRows publishes rows of the partition, in id order, in one of two
// modes (publishInOrder, publishConcurrently), each topic Kafka was away
// for in a probe when probe says so (Run's passes, not DrainOnce's), and
// with publishConcurrently each topic that keeps the others waiting too;
// what Kafka acknowledged is deleted later. more says the table holds
// more.
func (r *Relay) publishRows(ctx context.Context, p *partition, rows []row, more, probe bool) passResult {
	ps := &passState{failed: map[string]bool{}}
	ps.res.more = more
	units := r.units(rows)
	if probe {
		units = r.startProbes(ctx, p, units)
	}
	if r.cfg.OrderAcrossTopics {
		r.publishInOrder(ctx, p, units, ps)
	} else {
		r.publishConcurrently(ctx, p, units, ps, probe)
	}
	return r.passDone(ctx, ps)
}

// passDone reports a pass's acknowledged rows (OnPublished) and returns its
// result, with ctx's end as its publish error if it had none.
func (r *Relay) passDone(ctx context.Context, ps *passState) passResult {
	if ps.res.published > 0 && r.cfg.OnPublished != nil {
		r.cfg.OnPublished(ps.res.published, ps.oldest)
	}
	if ps.res.pubErr == nil && ctx.Err() != nil {
		ps.res.pubErr = ctx.Err()
	}
	return ps.res
}

// passState is what a pass learns while it settles its units.
type passState struct {
	res    passResult
	oldest time.Duration   // age of the oldest acknowledged row
	failed map[string]bool // topics that failed in this pass
	at     time.Time       // when Kafka answered, if not now (a probe's, a publish left behind's)
}

// selectBatch deletes the acknowledged rows and selects the partition's
// next batch, leaving out the topics that back off or are parked (the
// latter found by the query in the table, and noted in p.parked).
// more says the table may hold more for the next read: the read stopped at
// its bound (selected.full), or a full chunk of rows went back in the walk
// (selected.parkWork).
func (r *Relay) selectBatch(ctx context.Context, p *partition, upTo int64, since time.Time) (rows []row, more bool, err error) {
	now := time.Now()
	blocked := []string{}
	for t, b := range p.blocked {
		// A probing topic whatever since says: its rows must not overtake the probe's.
		if b.probing || b.waiting(now) && !b.at.Before(since) {
			blocked = append(blocked, t)
		}
	}
	// Taken before the query: the id it takes must be later than the ask.
	due := p.awaitDue.Swap(false)
	// A due read's id, the new target, is taken after its snapshot: only
	// a later read can end the wait.
	snapshot := !due && p.awaitXmin > 0
	res, err := r.selects.do(ctx, selectReq{partition: p.id, upTo: upTo, blocked: blocked, acked: p.acked, due: due, snapshot: snapshot,
		parks: len(p.parked) > 0 || !p.parksRead})
	if err != nil {
		if due {
			p.awaitDue.Store(true)
		}
		return nil, false, err
	}
	p.acked = p.acked[:0]
	clear(p.parked)
	for _, t := range res.parked {
		p.parked[t] = true
	}
	if r.cfg.OnParked != nil {
		for reason, n := range res.parkedRows {
			r.cfg.OnParked(reason, n)
		}
	}
	if !res.full {
		// A topic the read did not leave out and found no row of has
		// none waiting (an operator deleted them, a stale replica
		// published them): its backoff would have every pass read the
		// table (retryDue) until a publish of it succeeds.
		for t := range p.blocked {
			if !slices.Contains(blocked, t) && !slices.ContainsFunc(res.rows, func(x row) bool { return x.topic == t }) {
				delete(p.blocked, t)
				if p.awayTopic == t {
					p.awayTopic = "" // else another topic's one failure would pause the partition
				}
			}
		}
	}
	if due {
		if p.awaitXmin == 0 {
			p.awaitSince = time.Now()
		}
		p.awaitXmin = max(p.awaitXmin, res.xid+1)
	} else if snapshot {
		r.awaited(p, res.xmin)
	}
	p.parksRead = true
	return res.rows, res.full || res.parkWork, nil
}

// awaited ends the partition's wait when a snapshot's xmin has reached its
// target, and logs a wait that lasts: every pass reads the table meanwhile,
// for as long as any transaction of the server that had an id at the ask
// runs (another database's, an idle one's, a prepared one).
func (r *Relay) awaited(p *partition, xmin int64) {
	if xmin >= p.awaitXmin {
		if p.awaitWarned {
			r.log.Info().Int32("partition", p.id).Dur("waited", time.Since(p.awaitSince)).
				Msg("outbox: the transactions the table reads waited for have ended")
		}
		p.awaitXmin, p.awaitWarned = 0, false
		return
	}
	if !p.awaitWarned && time.Since(p.awaitSince) >= r.cfg.awaitWarnAfter {
		p.awaitWarned = true
		// Below the target, xmin is the oldest transaction still running;
		// backend_xid is how pg_stat_activity and pg_prepared_xacts show it.
		r.log.Warn().Int32("partition", p.id).Int64("xmin", xmin).Uint32("backend_xid", uint32(xmin)).
			Int64("target", p.awaitXmin).Dur("waited", time.Since(p.awaitSince)).
			Msg("outbox: every pass reads the table until the server's transactions below target have ended; find the oldest still running by backend_xid in pg_stat_activity (column backend_xid) or pg_prepared_xacts (column transaction)")
	}
}

// publishInOrder publishes the units one after another (OrderAcrossTopics).
// A topic that failed skips its later units, which must not overtake the
// failed rows; the pass stops when ctx ends, the database fails or the
// partition pauses for Kafka being away.
func (r *Relay) publishInOrder(ctx context.Context, p *partition, units []unit, ps *passState) {
	for _, u := range units {
		if ps.failed[u.topic] {
			continue
		}
		if !r.settle(ctx, p, u, r.publish(ctx, p, u.topic, u.rows), ps, false) {
			return
		}
	}
}

// publishConcurrently publishes every unit (one per topic) at once, then
// settles each: all were sent, so even when one says stop, the others'
// acknowledgements still count. When one was acknowledged, Kafka is there:
// the others' failures are their topics' own, and pause nothing.
//
// With probe, units still publishing probeGrace after the publish began,
// or after the last of the others' outcomes, become probes (probeRest)
// rather than hold the pass (a pass of one topic too: a command answered
// alone is one reply row): a
// topic whose Kafka partition lost its leader is held by kgo up to its
// delivery timeout (30 s) at its first failure too, not only at the
// retries startProbes takes out of the passes.
func (r *Relay) publishConcurrently(ctx context.Context, p *partition, units []unit, ps *passState, probe bool) {
	outcomes, finished := r.startAll(ctx, p, units)
	errs := make([]error, len(units))
	known := make([]bool, len(units))
	left := len(units)
	grace := time.NewTimer(probeGrace)
	if !probe {
		grace.Stop()
	}
	defer grace.Stop()
	for left > 0 {
		select {
		case o := <-outcomes:
			errs[o.k], known[o.k] = o.err, true
			if left--; probe && left > 0 {
				grace.Reset(probeGrace)
			}
		case <-grace.C:
			var rest []int
			for k := range units {
				if !known[k] {
					rest = append(rest, k)
				}
			}
			if r.probeRest(ctx, p, units, rest, outcomes, finished) {
				left = 0
			}
		case <-ctx.Done():
			// Run deletes the rows Kafka acknowledged of it (handOver);
			// the others are published again.
			p.left.leave(p.left.current(), finished, unsettled(units, outcomes), true)
			for k := range units {
				if !known[k] {
					errs[k], known[k] = ctx.Err(), true
				}
			}
			left = 0
		}
	}
	acked := false
	for k := range units {
		acked = acked || known[k] && errs[k] == nil
	}
	for k, u := range units {
		if known[k] {
			r.settle(ctx, p, u, errs[k], ps, acked)
		}
	}
}

// probeGrace is how long a pass waits for its units still publishing once
// the others' outcomes are in before they become probes: Kafka
// acknowledges within milliseconds, so a unit this far behind most likely
// waits for a partition's leader, up to the delivery timeout. Its rows
// wait for the probe rather than the other topics' for it.
const probeGrace = 300 * time.Millisecond

// settle accounts one unit's publish: acknowledges its rows, parks the
// records Kafka refuses for good, or backs its topic off (parks it, when
// refused for its replicas on end for ParkFor). It returns false
// when the pass should stop: ctx ended, the database failed, or Kafka
// looks away and the partition pauses. acked says another unit published
// at the same time was acknowledged: Kafka is not away.
func (r *Relay) settle(ctx context.Context, p *partition, u unit, err error, ps *passState, acked bool) bool {
	// Kafka's acknowledgements here (ps.ack counts the publishes it took),
	// of rows the failed call wrote or of setAside's halves, show it is
	// there.
	acks := p.acks
	var wrote map[int64]bool
	if err != nil {
		// Whatever the failure, only the rows Kafka did not write are
		// retried, counted or parked.
		u.rows, wrote = ps.ackWritten(p, u, err)
	}
	if err != nil && ctx.Err() == nil {
		if kind, _ := Classify(err); kind == RecordRefused {
			var dbErr error
			u.rows, err, dbErr = r.setAside(ctx, p, u, wrote, ps)
			if dbErr != nil {
				ps.res.dbErr = cmp.Or(ps.res.dbErr, dbErr)
				return false
			}
		}
	}
	// So do another unit's at the same time: they end a row of topics
	// Kafka was away for, whatever becomes of this unit's other rows.
	there := acked || p.acks != acks
	if there {
		p.awayTopic = ""
	}
	if errors.Is(err, errHeld) { // also from setAside's publishes
		ps.res.pubErr = cmp.Or(ps.res.pubErr, err)
		ps.res.more = false // nothing is to be read again before the hold ends
		return false
	}
	if err == nil {
		ps.ack(p, u.rows)
		delete(p.blocked, u.topic)
		if p.acks != acks { // not when setAside parked every row unasked
			p.kafkaFailures, p.awayTopic = 0, ""
		}
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	ps.failed[u.topic] = true
	ps.res.pubErr = cmp.Or(ps.res.pubErr, err)
	kind, reason := Classify(err)
	if kind != KafkaAway {
		if err := r.failed(ctx, p, u.topic, u.rows, err, reason); err != nil {
			ps.res.dbErr = cmp.Or(ps.res.dbErr, err)
			return false
		}
		return true
	}
	b := p.blocked[u.topic]
	b.failures++
	b.at = time.Now()
	b.until = b.at.Add(r.backoff(b.failures))
	if reason != ReasonReplicas {
		b.replicasSince = time.Time{}
	} else if b.replicasSince.IsZero() {
		b.replicasSince = b.at
	}
	p.blocked[u.topic] = b
	if reason == ReasonReplicas && b.at.Sub(b.replicasSince) >= r.cfg.ParkFor {
		// Refused so as long as a park lasts: no broker restarting, but
		// a factor above the brokers the cluster has. Parked, the rows
		// count in /health, leave the reads, and their topic's creation
		// is not tried while the park lasts. parkTopic drops the block,
		// so when the park ends the topic is retried with backoff for
		// another ParkFor before it is parked again.
		ctx, cancel := context.WithTimeout(ctx, queryTimeout)
		defer cancel()
		log := r.log.With().Err(err).Int32("partition", p.id).Str("topic", u.topic).Dur("refused_for", b.at.Sub(b.replicasSince)).Logger()
		if err := r.parkTopic(ctx, p, u.topic, kerr.InvalidReplicationFactor.Message, log); err != nil {
			ps.res.dbErr = cmp.Or(ps.res.dbErr, err)
			return false
		}
		return true
	}
	log := r.log.Warn().Err(err).Int32("partition", p.id).Str("topic", u.topic).Int("rows", len(u.rows)).
		Dur("retry_in", b.until.Sub(b.at))
	if reason != "" {
		log = log.Str("reason", reason)
	}
	log.Msg("outbox: Kafka did not take the records; retrying")
	// A creation refused for its replicas is Kafka's answer, the topic's
	// own failure: counted toward a pause, new requesters' reply topics
	// failing so while a broker is down would hold every other topic's
	// records. Nor is it a success that ends the row of away failures: in
	// an outage of most brokers new reply topics are refused so between
	// the existing topics' failures, which would then never pause.
	if reason == ReasonReplicas {
		return true
	}
	if there { // the failure is the topic's own
		return true
	}
	previous := p.awayTopic
	p.awayTopic = u.topic
	if previous != "" && previous != u.topic && p.pauseUntil.Before(time.Now()) {
		// Two topics in a row: most likely Kafka itself is away, and
		// trying every other topic would only wait out more timeouts. One
		// topic failing again is its own backoff's business.
		p.kafkaFailures++
		p.pauseUntil = time.Now().Add(r.backoff(p.kafkaFailures))
		ps.res.more = false
		r.log.Warn().Int32("partition", p.id).Dur("retry_in", time.Until(p.pauseUntil)).Msg("outbox: Kafka looks unavailable; pausing the partition")
		return false
	}
	return true
}

// ack counts rows Kafka acknowledged; they are deleted later. None is no
// acknowledgement (p.acks stays).
func (ps *passState) ack(p *partition, rows []row) {
	if len(rows) == 0 {
		return
	}
	now := time.Now()
	at := cmp.Or(ps.at, now)
	if len(p.acked) == 0 {
		p.ackedAt = now
	}
	for _, x := range rows {
		p.acked = append(p.acked, x.rowRef)
		ps.oldest = max(ps.oldest, at.Sub(x.at))
	}
	ps.res.published += len(rows)
	p.acks++
}

// ackWritten acknowledges the rows of u that Kafka wrote, by err, the
// unit's publish error (all of them when nil), and returns the others.
// Only a PublishError about this very call (Total) says which were
// written. kgo fails every batch it holds for a Kafka partition once one
// failed, so the rows it wrote of a key are mostly those before the key's
// first failure. Not always: kgo fails a record too large on its own, and
// a record that entered its buffer only after a failure (the call waited
// for room in it) is written after the failed ones. Such a row is kept
// with them, its id in wrote, so that it goes again after any of them
// that lands.
func (ps *passState) ackWritten(p *partition, u unit, err error) (rest []row, wrote map[int64]bool) {
	if err == nil {
		ps.ack(p, u.rows)
		return nil, nil
	}
	var perr *kafkapubsub.PublishError
	if !errors.As(err, &perr) || perr.Total != len(u.rows) {
		return u.rows, nil
	}
	failed := make(map[int]bool, len(perr.Failed))
	for _, f := range perr.Failed {
		failed[f.Index] = true
	}
	var written []row
	held := map[string]bool{} // keys of failed rows so far
	for i, x := range u.rows {
		switch {
		case failed[i]:
			held[string(x.key)] = true
		case held[string(x.key)]:
			if wrote == nil {
				wrote = map[int64]bool{}
			}
			wrote[x.id] = true
		default:
			written = append(written, x)
			continue
		}
		rest = append(rest, x)
	}
	if len(written) > 0 {
		ps.ack(p, written)
	}
	return rest, wrote
}

// setAside handles a publish in which Kafka refused some record for good;
// u.rows are the rows ackWritten kept (wrote: those of them Kafka wrote).
// A broker refuses a whole produce batch for one record too large, so the
// failed rows go again in halves, in id order, rather than each alone: a
// half Kafka takes is settled in one round trip; a refused one has the
// rows Kafka wrote of it acknowledged (ackWritten) and the others split
// again, down to a row refused alone, which is parked for good at once;
// the rows after it go on. One such row among n costs about 2·log2(n)
// round trips, a topic whose max.message.bytes is below the producer's
// batch fewer than four per batch it takes, not one a row. A row Kafka wrote (also
// one a refused half wrote after a failed row of its key) goes again only
// when an earlier row of its key landed after it, every key of a half
// taken counting: it ends the run of rows sent in halves before it, and is
// decided once they are settled. It returns the rows left from the first
// part that failed in another way (a topic refused, Kafka away), with that
// error, for the caller to account as usual; none and nil when every row
// was settled.
func (r *Relay) setAside(ctx context.Context, p *partition, u unit, wrote map[int64]bool, ps *passState) (rest []row, err, dbErr error) {
	ps.at = time.Time{} // a probe's answer time: the rows below are acknowledged now
	if wrote == nil {
		wrote = map[int64]bool{}
	}
	// The publishes here are numbered from 1: landed[key] is the last
	// that a row of key landed in, in[id] the one that wrote a row of
	// wrote in a refused half (0 for the caller's, before them all).
	calls, landed, in := 0, map[string]int{}, map[int64]int{}
	type part struct {
		rows    []row
		refused bool // Kafka refused them together: split, or publish alone
	}
	todo := []part{{u.rows, true}} // in id order from its end
	for len(todo) > 0 {
		t := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		switch {
		case len(t.rows) == 0:
		case t.refused && wrote[t.rows[0].id] && landed[string(t.rows[0].key)] <= in[t.rows[0].id]:
			ps.ack(p, t.rows[:1])
			todo = append(todo, part{t.rows[1:], true})
		case t.refused:
			n := 1 // the run up to the next row Kafka wrote
			for n < len(t.rows) && !wrote[t.rows[n].id] {
				n++
			}
			h := (n + 1) / 2
			todo = append(todo, part{t.rows[n:], true}, part{t.rows[h:n], false}, part{t.rows[:h], false})
		default:
			calls++
			err := r.publish(ctx, p, u.topic, t.rows)
			kind, reason := Classify(err)
			switch {
			case err == nil:
				ps.ack(p, t.rows)
				for _, x := range t.rows {
					landed[string(x.key)] = calls
				}
			case kind != RecordRefused || ctx.Err() != nil:
				// The rows Kafka wrote of the half (another Kafka partition's)
				// are acknowledged; the rest are the others, as ackWritten
				// says: one without a leader fails alone.
				left, _ := ps.ackWritten(p, unit{u.topic, t.rows}, err)
				rest = slices.Clone(left)
				for i := len(todo) - 1; i >= 0; i-- {
					rest = append(rest, todo[i].rows...)
				}
				return rest, err, nil
			case len(t.rows) == 1:
				if err := r.parkRow(ctx, p, u.topic, t.rows[0], reason, err); err != nil {
					return nil, nil, err
				}
			default:
				left, w := ps.ackWritten(p, unit{u.topic, t.rows}, err)
				k := 0
				for _, x := range t.rows { // those not left (in order) landed
					if k < len(left) && left[k].id == x.id {
						k++
					} else {
						landed[string(x.key)] = calls
					}
				}
				for id := range w {
					wrote[id], in[id] = true, calls
				}
				for _, x := range left { // written after a failed row of its key: landed now too
					if w[x.id] {
						landed[string(x.key)] = calls
					}
				}
				todo = append(todo, part{left, true})
			}
		}
	}
	return nil, nil, nil
}

// parkRow parks a row Kafka refuses for good until 'infinity': it is kept
// (and counted in /health) until an operator re-drives or deletes it, and
// holds nothing back.
func (r *Relay) parkRow(ctx context.Context, p *partition, topic string, x row, reason string, cause error) error {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	_, err := r.cfg.Pool.Exec(ctx, `
		UPDATE outbox SET parked_until = 'infinity', park_reason = $2, attempts = attempts + 1, last_error = $3
		WHERE id = $1 AND created_at = $4`, x.id, reason, errorText(cause), x.created)
	if err != nil {
		return fmt.Errorf("parking outbox row %d of partition %d: %w", x.id, p.id, err)
	}
	size := len(x.value) // the record's, not the stored form's
	if v, _, err := topics.DecodeOutboxRow(x.value, x.headers); err == nil {
		size = len(v)
	}
	r.log.Error().Err(cause).Int32("partition", p.id).Str("topic", topic).Int64("row", x.id).Str("reason", reason).
		Int("value_bytes", size).Msg("outbox: Kafka refuses the record for good; row parked, the rows after it go on")
	if r.cfg.OnParked != nil {
		r.cfg.OnParked(reason, 1)
	}
	return nil
}

// errorText is an error as stored in last_error, bounded. It is valid
// UTF-8 without NUL, cut between characters: PostgreSQL refuses any other
// text (22021), and the row would never be counted or parked.
func errorText(err error) string {
	msg := strings.ToValidUTF8(strings.ReplaceAll(err.Error(), "\x00", ""), "\uFFFD")
	return topics.CutUTF8(msg, 1000)
}

// unit is rows of one topic published in one call.
type unit struct {
	topic string
	rows  []row
}

// units splits a batch into Publish calls: runs of consecutive rows of one
// topic with OrderAcrossTopics, else all of a topic's rows, in id order.
func (r *Relay) units(rows []row) []unit {
	var out []unit
	if r.cfg.OrderAcrossTopics {
		for i := 0; i < len(rows); {
			j := i + 1
			for j < len(rows) && rows[j].topic == rows[i].topic {
				j++
			}
			out = append(out, unit{rows[i].topic, rows[i:j]})
			i = j
		}
		return out
	}
	idx := map[string]int{}
	for _, x := range rows {
		k, ok := idx[x.topic]
		if !ok {
			k = len(out)
			idx[x.topic] = k
			out = append(out, unit{topic: x.topic})
		}
		out[k].rows = append(out[k].rows, x)
	}
	return out
}

// outcome is the outcome of units[k]'s publish.
type outcome struct {
	k   int
	err error
	at  time.Time // when it came: a late one's lag (handOver)
}

// startAll starts publishing the units at once and returns each one's
// outcome as soon as it is known, on outcomes, which has room for all of
// them, and a channel closed when every publishing call has returned: in
// one call when the publisher takes several topics (kafkapubsub's does),
// else at most maxConcurrentTopics calls at a time.
func (r *Relay) startAll(ctx context.Context, p *partition, units []unit) (<-chan outcome, <-chan struct{}) {
	outcomes, finished := make(chan outcome, len(units)), make(chan struct{})
	if err := p.waitHold(ctx); err != nil {
		for k := range units {
			outcomes <- outcome{k, err, time.Now()}
		}
		close(finished)
		return outcomes, finished
	}
	if tp, ok := r.cfg.Publisher.(topicsPublisher); ok {
		// Not ended with the pass: units past probeGrace are published
		// on as probes.
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		var batches []kafkapubsub.TopicMessages
		var of []int // unit of each batch
		for k, u := range units {
			msgs, err := r.messages(pctx, u.rows)
			if err != nil {
				outcomes <- outcome{k, err, time.Now()}
				continue
			}
			batches, of = append(batches, kafkapubsub.TopicMessages{Topic: u.topic, Messages: msgs}), append(of, k)
		}
		go func() {
			defer close(finished)
			defer cancel()
			if len(batches) > 0 {
				tp.PublishTopicsEach(func(i int, err error) { outcomes <- outcome{of[i], err, time.Now()} }, batches...)
			}
		}()
		return outcomes, finished
	}
	go func() {
		defer close(finished)
		sem := make(chan struct{}, maxConcurrentTopics)
		var wg sync.WaitGroup
		for k, u := range units {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				err := r.publish(ctx, p, u.topic, u.rows)
				outcomes <- outcome{k, err, time.Now()}
			})
		}
		wg.Wait()
	}()
	return outcomes, finished
}

// topicsPublisher is a publisher that takes several topics in one call
// (kafkapubsub.Publisher): a pass's topics then go out together in the
// same produce requests, where separate calls would each send their own,
// and an idempotent Kafka client keeps at most five in flight per broker
// (one until the broker first answered), so they would queue for each
// other.
type topicsPublisher interface {
	PublishTopicsEach(done func(i int, err error), batches ...kafkapubsub.TopicMessages)
}

// selectReq asks for a partition's next rows up to upTo, but for the
// blocked topics' and the parked ones', after deleting the acked rows; with
// snapshot, for the xmin of a snapshot taken before the rows'; with due,
// for the id of the query's transaction, taken after that snapshot.
type selectReq struct {
	partition int32
	upTo      int64
	blocked   []string
	acked     []rowRef
	snapshot  bool
	due       bool
	// parks: the partition had parked topics at its last read, or has
	// not read yet; this read keeps the walk to the rows not parked.
	parks bool
}

// selected answers a selectReq: the rows, the topics parked, whose rows
// were left out, and the xmin and transaction id asked for.
type selected struct {
	rows      []row
	parked    []string
	xmin, xid int64
	// full: the read stopped at BatchSize rows or at its share of the
	// bytes, before rows it may return.
	full bool
	// parkWork: a full chunk of rows went back in the walk (selectRows):
	// more may wait for the next read.
	parkWork bool
	// parkedRows counts, by reason, the rows of a running park's topic the
	// read parked (selectRows), for Config.OnParked.
	parkedRows map[string]int
}

// parkedTopics is a recursive CTE, pk(p, t), of the parked topics of the
// partitions $1: each (partition, topic) with a row parked until a finite
// time, ended or not, one look-up in outbox_parked each, stepping over the
// rows parked for good (few: records Kafka refuses). The read's SELECT and
// its parks' statement each take it in their own snapshot.
const parkedTopics = `pk(p, t) AS (
	SELECT q.p, (SELECT min(topic) FROM outbox WHERE source_partition = q.p AND parked_until < 'infinity')
	FROM unnest($1::int[]) AS q(p)
	UNION ALL
	SELECT pk.p, (SELECT min(topic) FROM outbox WHERE source_partition = pk.p AND topic > pk.t AND parked_until < 'infinity')
	FROM pk WHERE pk.t IS NOT NULL
)`

// unparkChunk bounds the rows one read's statement puts back in the walked
// index or takes out of it, all partitions of the read together: a
// topic's backlog may be millions of rows, and the statement holds every
// partition's read merged with it.
const unparkChunk = 1000

// selectRows deletes the acknowledged rows and selects the next batch of
// each request's partition, in id order, in one round trip. The walk is
// the partition's stretch of outbox_waiting, source_partition >= q.p and
// (source_partition, id) <= (q.p, q.up): the index serves the whole
// condition and the order, so a partition never reads another's rows
// (docs/performance.md), nor the parked ones: a parked topic's backlog
// costs a read nothing, and only the rows written since its park are
// walked past. No equality on source_partition: with one, the partition
// is a constant of the walk, its order the id's, which outbox_pkey serves
// too, and PostgreSQL's statistics (the heap in id order, the partitions'
// rows interleaved in it) make outbox_pkey, every partition's rows
// filtered, look cheaper in the generic plan: at twelve partitions eleven
// other rows read for each of its own, and the whole table for a partition
// with none (TestReadWalksOnlyItsPartitions). The running sum orders by
// the same keys, so no sort comes between. The LIMIT is a sub-select so
// that a custom plan (plan_cache_mode auto, which the connection string
// may set) plans it unknown, as the generic plan does: the stretch's
// bounds are unnest's values, so PostgreSQL estimates it by default
// selectivities (81 rows for a partition's 4,688 of 300,000, the outbox
// never analyzed), and with BatchSize known above the estimate, the whole
// stretch collected with a bitmap and sorted looks cheaper than the walk,
// every read then reading the partition's whole backlog
// (TestPlansByIndexWhateverTheStatistics).
//
// A topic is parked while a row of it in the partition is marked parked
// until a finite time, ended or not (a row parked for good holds nothing
// back): its other rows wait behind, and the rows of an ended park go back
// in the walk first (unparkChunk). The statement finds such topics itself,
// in the table, with the snapshot it selects by, and reports them (rows
// with a NULL id): a park an operator ended (parked_until NULL) is over at
// the next read, and one the read reports held back every row of its topic
// the read did not take. They
// are found in outbox_parked, stepping over the partition's rows parked
// for good (few: records Kafka refuses), not by reading the waiting rows.
//
// A partition's rows stop at BatchSize, or at its share of maxHeldBytes
// (keys, values and headers as stored; octet_length reads a TOASTed
// value's size, not the value): the rows whose running sum is within the
// share, and the first whatever its size. That is a prefix of the
// partition's walk, in the id order its rows are published in, so the
// rows it leaves, of any topic, go after those taken, at the next read.
// The sum runs over the walk's rows after its LIMIT, in their order: the
// read walks the pages it did, though the window over the walked rows adds
// about half again the walk's time for small rows (TestReadOfSmallRowsPlan;
// narrower windows measured slower). The last row taken says whether the next was
// left (selected.full).
func (r *Relay) selectRows(ctx context.Context, reqs []selectReq) ([]selected, error) {
	parts, upTos := make([]int32, len(reqs)), make([]int64, len(reqs))
	var blockedParts []int32
	var blocked []string
	var acked []rowRef
	for i, q := range reqs {
		parts[i], upTos[i] = q.partition, q.upTo
		for _, t := range q.blocked {
			blockedParts, blocked = append(blockedParts, q.partition), append(blocked, t)
		}
		acked = append(acked, q.acked...)
	}
	b := &pgx.Batch{}
	queueSettings(b)
	var xmin, xid int64
	if slices.ContainsFunc(reqs, func(q selectReq) bool { return q.snapshot }) {
		// Before the SELECT, whose snapshot then holds every transaction
		// this one says ended; before the id below and the deletes, which
		// would hold xmin back. Nothing running (xmin = xmax) ends every
		// wait: after a crash ids may be handed out again below a target.
		b.Queue(`SELECT CASE WHEN pg_snapshot_xmin(s) = pg_snapshot_xmax(s) THEN 9223372036854775807
			ELSE pg_snapshot_xmin(s)::text::int8 END FROM pg_current_snapshot() s`).
			QueryRow(func(row pgx.Row) error { return row.Scan(&xmin) })
	}
	if slices.ContainsFunc(reqs, func(q selectReq) bool { return q.due }) {
		// Ids are handed out in order: every transaction that had one
		// at the ask has a lower one, all ended once a snapshot's xmin
		// is past it (and this transaction ended). One serves every due
		// request of the batch.
		b.Queue(`SELECT pg_current_xact_id()::text::int8`).
			QueryRow(func(row pgx.Row) error { return row.Scan(&xid) })
	}
	queueDelete(b, acked)
	// Marks are read with the rows they announce: a mark is locked, so
	// deleted, only once its writers committed, and the SELECT after this
	// DELETE sees their rows. A mark a writer still holds (its upsert not
	// committed, maybe for long) is skipped rather than waited for, which
	// would hold this read, every partition's in it, until that writer
	// ends: the mark outlives its commit, for the next read, and the
	// owner's next transaction on that writer's locks, which waits for it,
	// finds the mark.
	b.Queue(`DELETE FROM outbox_marks WHERE source_partition IN (
		SELECT source_partition FROM outbox_marks WHERE source_partition = ANY($1) FOR UPDATE SKIP LOCKED)`, parts)
	parkWork := map[int32]bool{}
	parkedRows := map[int32]map[string]int{}
	var parkParts []int32
	for _, q := range reqs {
		if q.parks {
			parkParts = append(parkParts, q.partition)
		}
	}
	if len(parkParts) > 0 {
		// The parks of the partitions that have some keep out of the
		// walked index (outbox_waiting) what the SELECT below leaves out:
		// a park that ended (by the database's clock, or an operator's
		// past time) puts its rows back, and a park still running takes
		// those of its topic written since it began among the oldest
		// waiting rows, the ones the SELECT walks past (marked until the
		// same time, for the same reason): a batch of them, or a chunk,
		// after the rows of the topics the SELECT leaves out in memory
		// (backing off, probing), which it walks past too. The SELECT
		// leaves a topic out while any row of it is marked, so its rows go
		// again in id order once the last is back. A chunk a partition,
		// the statement's share of unparkChunk, of rows put back: every
		// partition's read in the round trip waits for it, and a backlog
		// of other topics' rows is not walked. The waiting rows looked at
		// are the partition's stretch of outbox_waiting, to the largest
		// id, walked as the SELECT walks it, with no equality on
		// source_partition (selectRows): with one the generic plan walks
		// outbox_pkey, through the other partitions' rows before and among
		// the chunk's (TestParkingWalksAChunk). The parked topics are
		// found as the SELECT finds them, each one's ended rows and its
		// park by a look-up in outbox_parked. Rows another transaction
		// holds wait for a later read.
		chunk := max(1, (cmp.Or(r.cfg.unparkChunk, unparkChunk)+len(parkParts)-1)/len(parkParts))
		b.Queue(`
			WITH RECURSIVE `+parkedTopics+`, pt AS (
				SELECT pk.p, pk.t, x.until, x.reason FROM pk, LATERAL (
					SELECT parked_until AS until, park_reason AS reason FROM outbox
					WHERE source_partition = pk.p AND topic = pk.t AND parked_until < 'infinity'
					ORDER BY parked_until DESC LIMIT 1) x
				WHERE pk.t IS NOT NULL
			), u AS (
				UPDATE outbox SET parked_until = NULL WHERE id = ANY(ARRAY(
					SELECT e.id FROM unnest($1::int[]) AS q(p), LATERAL (
						SELECT o.id FROM pt, LATERAL (
							SELECT id FROM outbox WHERE source_partition = pt.p AND topic = pt.t AND parked_until <= now()
							ORDER BY parked_until LIMIT $2 FOR UPDATE SKIP LOCKED) o
						WHERE pt.p = q.p
						LIMIT $2) e))
				RETURNING source_partition
			), m AS (
				UPDATE outbox o SET parked_until = pt.until, park_reason = pt.reason FROM pt
				WHERE o.id = ANY(ARRAY(
					SELECT c.id FROM outbox c WHERE c.id = ANY(ARRAY(
						SELECT w.id FROM unnest($1::int[]) AS q(p), LATERAL (
							SELECT id, topic FROM outbox
							WHERE source_partition >= q.p AND (source_partition, id) <= (q.p, 9223372036854775807) AND parked_until IS NULL
							  AND topic <> ALL(ARRAY(SELECT b.t FROM unnest($3::int[], $4::text[]) AS b(p, t) WHERE b.p = q.p))
							ORDER BY source_partition, id
							LIMIT $5) w
						WHERE EXISTS (SELECT FROM pt WHERE pt.p = q.p AND pt.until > now())
						  AND w.topic IN (SELECT pt.t FROM pt WHERE pt.p = q.p AND pt.until > now())))
					FOR UPDATE SKIP LOCKED))
				  AND o.source_partition = pt.p AND o.topic = pt.t AND pt.until > now()
				RETURNING o.source_partition, o.park_reason
			)
			SELECT source_partition, false, count(*), '' FROM u GROUP BY 1
			UNION ALL
			SELECT source_partition, true, count(*), coalesce(park_reason, '') FROM m GROUP BY 1, 4`,
			parkParts, chunk, blockedParts, blocked, max(chunk, r.cfg.BatchSize)).Query(func(rows pgx.Rows) error {
			var p int32
			var parking bool
			var n int
			var reason string
			_, err := pgx.ForEachRow(rows, []any{&p, &parking, &n, &reason}, func() error {
				if parking {
					if parkedRows[p] == nil {
						parkedRows[p] = map[string]int{}
					}
					parkedRows[p][reason] += n
					return nil
				}
				// Rows put back free their topic once the last is back: a
				// full chunk has the next read come at once. Rows parked
				// need not: the next read at its usual time looks at the
				// waiting rows again, and a topic parked with a row each
				// round trip would otherwise keep the partition reading.
				parkWork[p] = n == chunk
				return nil
			})
			return err
		})
	}
	byPart := make(map[int32][]row, len(reqs))
	parked := map[int32][]string{}
	cut := map[int32]bool{}
	// The partitions of a read share its bytes: a read of many at once (a
	// takeover, a park's end) holds no more than one of a partition alone,
	// but for the first row of each, taken whatever its size. A share
	// each rather than one sum across them in the read's id order, so that
	// a partition's large rows do not leave the others' passes nothing to
	// publish (and reading again) and no sort of all partitions' rows
	// comes before the cut.
	share := (cmp.Or(r.cfg.readBytes, maxHeldBytes) + len(reqs) - 1) / len(reqs)
	b.Queue(`
		WITH RECURSIVE `+parkedTopics+`, ex(p, t) AS (
			SELECT p, t FROM pk WHERE t IS NOT NULL
			UNION ALL
			SELECT * FROM unnest($3::int[], $4::text[])
		)
		SELECT p, NULL::int8 AS id, t, NULL::bytea, NULL::bytea, NULL::bytea, NULL::timestamptz, NULL::float8, false FROM pk WHERE t IS NOT NULL
		UNION ALL
		SELECT q.p, o.id, o.topic, o.key, o.value, o.headers, o.created_at, extract(epoch FROM clock_timestamp() - o.created_at)::float8,
		       coalesce(o.run > 0 AND o.run + o.next > $6, false)
		FROM unnest($1::int[], $2::int8[]) AS q(p, up),
		LATERAL (
			SELECT w.*, sum(w.size) OVER s AS run, lead(w.size) OVER s AS next FROM (
				SELECT source_partition, id, topic, key, value, headers,
				       coalesce(octet_length(key), 0) + coalesce(octet_length(value), 0) + octet_length(headers) AS size, created_at FROM outbox
				WHERE source_partition >= q.p AND (source_partition, id) <= (q.p, q.up) AND parked_until IS NULL
				  AND topic NOT IN (SELECT ex.t FROM ex WHERE ex.p = q.p)
				ORDER BY source_partition, id
				LIMIT (SELECT $5::int8)) w
			WINDOW s AS (ORDER BY w.source_partition, w.id ROWS UNBOUNDED PRECEDING)) o
		WHERE o.run <= $6 OR o.run = o.size
		ORDER BY id`, parts, upTos, blockedParts, blocked, r.cfg.BatchSize, share).Query(func(rows pgx.Rows) error {
		var p int32
		var id *int64
		var x row
		var created *time.Time
		var age *float64
		var leftNext bool
		now := time.Now() // the rows' ages are as of their reading
		_, err := pgx.ForEachRow(rows, []any{&p, &id, &x.topic, &x.key, &x.value, &x.headers, &created, &age, &leftNext}, func() error {
			if id == nil {
				parked[p] = append(parked[p], x.topic)
				return nil
			}
			x.rowRef = rowRef{*id, *created}
			x.at = now.Add(-time.Duration(*age * float64(time.Second)))
			byPart[p] = append(byPart[p], x)
			cut[p] = cut[p] || leftNext
			x = row{} // the scanned slices now belong to byPart
			return nil
		})
		return err
	})
	if err := r.cfg.Pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, fmt.Errorf("selecting outbox rows of partitions %v: %w", parts, err)
	}
	out := make([]selected, len(reqs))
	for i, q := range reqs {
		rows := byPart[q.partition]
		out[i] = selected{rows: rows, parked: parked[q.partition], xmin: xmin, xid: xid, parkWork: parkWork[q.partition],
			parkedRows: parkedRows[q.partition], full: len(rows) == r.cfg.BatchSize || cut[q.partition]}
	}
	return out, nil
}

// deleteAcked deletes the partition's acknowledged rows.
func (r *Relay) deleteAcked(ctx context.Context, p *partition) error {
	if len(p.acked) == 0 {
		return nil
	}
	// Even when ctx is done: the rows were acknowledged, and keeping them
	// would publish them again (but not for ErrUnreachable: see there).
	dctx, cancel := beyond(ctx, queryTimeout)
	defer cancel()
	if _, err := r.deletes.do(dctx, p.acked); err != nil {
		return fmt.Errorf("deleting %d published outbox rows of partition %d: %w", len(p.acked), p.id, err)
	}
	p.acked = p.acked[:0]
	return nil
}

func (r *Relay) deleteRows(ctx context.Context, reqs [][]rowRef) ([]struct{}, error) {
	var refs []rowRef
	for _, q := range reqs {
		refs = append(refs, q...)
	}
	b := &pgx.Batch{}
	queueSettings(b)
	queueDelete(b, refs)
	if err := r.cfg.Pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return make([]struct{}, len(reqs)), nil
}

// queueSettings queues what each of the relay's batches starts with. A
// batch is one implicit transaction (one Sync), so a local setting lasts
// until its end. set_config rather than SET LOCAL: both take effect there,
// but SET LOCAL outside BEGIN also logs a WARNING in PostgreSQL's log on
// every batch.
//
// The relay's writes (deletes of published rows and of marks) do not wait
// for the WAL flush: a delete lost in a crash only publishes its rows
// again, which at-least-once delivery allows, or makes a pass read the
// table, and the relay stops queueing behind fsync.
//
// Sequential scans are off, so that every statement is planned by its index
// (outbox_pkey, outbox_waiting, outbox_parked, outbox_marks_pkey). The outbox and its
// marks are queues: their statistics, counted by the VACUUM that just
// emptied them of dead rows, always call them a few rows, so the generic
// plan each connection caches was a sequential scan, through every row
// deleted until the next VACUUM (the DELETE of published rows: 0.7 ms a
// call against 0.3 by the key at 16 lockbench clients, tens of ms behind a
// backlog). A cached plan keeps the settings it was made under, and these
// statements run only in these batches.
func queueSettings(b *pgx.Batch) {
	b.Queue(`SELECT set_config('synchronous_commit', 'off', true), set_config('enable_seqscan', 'off', true)`)
}

// queueDelete queues the deletion of rows, if any, after queueSettings.
func queueDelete(b *pgx.Batch, refs []rowRef) {
	if len(refs) == 0 {
		return
	}
	created := make([]time.Time, len(refs))
	for i, x := range refs {
		created[i] = x.created
	}
	b.Queue(deleteRowsSQL, refIDs(refs), created)
}

// deleteRowsSQL deletes rows by rowRef.
const deleteRowsSQL = `DELETE FROM outbox WHERE ` + byRowRef

// byRowRef matches the rows by rowRef, their ids $1 and created_at $2: the
// ids of the pairs that name a row, each pair looked up in outbox_pkey,
// then those rows by id = ANY, through outbox_pkey again (the id is the
// key: the row found by it is the pair's). Two look-ups a row, in
// proportion to the rows whatever the plan's estimates. Joined with the
// pairs, the rows were planned by the statistics: a few hundred as a merge
// join along the whole index, through every row deleted since the last
// VACUUM; under id = ANY, with the outbox estimated at one row (a VACUUM
// that found it empty), as a nested loop that scanned the pairs again for
// every row (1,023 rows deleted in 271 ms, the read batch behind it). The
// LIMIT keeps the LATERAL a subquery run for each pair, which PostgreSQL
// would otherwise flatten into a join of its choosing.
const byRowRef = `id = ANY(ARRAY(SELECT r.id FROM unnest($1::int8[], $2::timestamptz[]) AS r(id, created_at),
	LATERAL (SELECT FROM outbox o WHERE o.id = r.id AND o.created_at = r.created_at LIMIT 1) m))`

// refIDs are the ids of refs.
func refIDs(refs []rowRef) []int64 {
	ids := make([]int64, len(refs))
	for i, x := range refs {
		ids[i] = x.id
	}
	return ids
}

// errHeld is the error of a publish that RunHeld's hold kept from being
// made: the pass stops, nothing counted as failed.
var errHeld = errors.New("held from publishing")

// waitHold waits for RunHeld's hold, if any: errHeld when it refused.
func (p *partition) waitHold(ctx context.Context) error {
	hold := p.hold.Load()
	if hold == nil || *hold == nil {
		return nil
	}
	if err := (*hold)(ctx); err != nil {
		return fmt.Errorf("%w: %w", errHeld, err)
	}
	return nil
}

// publish sends one run of rows of one topic in one call.
func (r *Relay) publish(ctx context.Context, p *partition, topic string, run []row) error {
	if err := p.waitHold(ctx); err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
	defer cancel()
	msgs, err := r.messages(pctx, run)
	if err != nil {
		return err
	}
	return p.left.await(ctx, unit{topic, run}, func() error { return r.cfg.Publisher.Publish(topic, msgs...) })
}

// messages are the rows as messages whose context is ctx.
func (r *Relay) messages(ctx context.Context, run []row) ([]*message.Message, error) {
	msgs := make([]*message.Message, len(run))
	for i, x := range run {
		m, err := r.message(x)
		if err != nil {
			return nil, err
		}
		m.SetContext(ctx)
		msgs[i] = m
	}
	return msgs, nil
}

// await runs call, publishing u, and returns its result, or ctx's error
// when ctx ends first. An idempotent kgo client never gives up on a
// request that got no answer (it cannot know whether it was written),
// whatever the timeouts: a publish then returns only when a broker
// answers. That is the pause we want while Kafka is away, but Run must
// still end on revocation, so the call is left behind when ctx ends, in
// l, which Run waits for a while (handOver): the rows Kafka acknowledged
// by then are deleted, the others stay and are published again later (a
// duplicate, never a loss).
func (l *leftBehind) await(ctx context.Context, u unit, call func() error) error {
	run := l.current()
	if err := ctx.Err(); err != nil {
		// Run has ended (startAll starts units as others return): a call
		// started now would be left behind after its hand-over, perhaps
		// once the next Run has begun. Its rows are published again.
		return err
	}
	var err error
	var at time.Time
	finished := make(chan struct{})
	go func() { err = call(); at = time.Now(); close(finished) }()
	select {
	case <-finished:
		return err
	case <-ctx.Done():
		l.leave(run, finished, func() []answer { return []answer{{u, err, at}} }, false)
		return ctx.Err()
	}
}

// leftBehind are the publishing calls a partition's passes left behind,
// each a channel closed when it returns, and what they answer, until
// handOver is done with them (forget).
type leftBehind struct {
	mu        sync.Mutex
	calls     []<-chan struct{}
	late      []lateCall
	forgotten bool
	// run counts the Runs (reset): a call a Run's publish left after that
	// Run returned (HandOverWait < 0 does not wait for them) is not the
	// next Run's to wait for or acknowledge.
	run uint64
}

// lateCall is a call left behind: answers are the outcomes of the units
// it published that no pass settled, once finished is closed; early, those
// it gave so far, before that too (startAll's call, each of whose outcomes
// is final once sent: with kafkapubsub it publishes all of a pass's
// topics, and one Kafka does not answer must not hold the others').
type lateCall struct {
	finished <-chan struct{}
	answers  func() []answer
	early    bool
}

// answer is the outcome of a unit's publish.
type answer struct {
	u   unit
	err error
	at  time.Time // when Kafka answered
}

func (l *leftBehind) add(finished <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, finished)
}

// leave leaves a call of Run run (current) behind (add), whose answers
// handOver acknowledges (lateCall; early: before the call returned).
func (l *leftBehind) leave(run uint64, finished <-chan struct{}, answers func() []answer, early bool) {
	l.mu.Lock()
	if run != l.run {
		l.mu.Unlock()
		return // a Run that returned: its rows are published again
	}
	if !l.forgotten {
		l.late = append(l.late, lateCall{finished, answers, early})
	}
	l.mu.Unlock()
	l.add(finished) // after: every call wait waits for has its answers
}

// current is the Run whose calls are left now.
func (l *leftBehind) current() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.run
}

// unsettled are the answers so far of a call publishing units: the
// outcomes on outcomes (startAll's), which neither the pass nor probeRest
// reads once the call is left behind.
func unsettled(units []unit, outcomes <-chan outcome) func() []answer {
	return func() []answer {
		var out []answer
		for {
			select {
			case o := <-outcomes:
				out = append(out, answer{units[o.k], o.err, o.at})
			default:
				return out
			}
		}
	}
}

// answered returns what the calls left behind have answered so far.
func (l *leftBehind) answered() []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []answer
	for _, c := range l.late {
		select {
		case <-c.finished:
		default:
			if !c.early {
				continue
			}
		}
		out = append(out, c.answers()...)
	}
	return out
}

// forget drops the answers of the calls left behind, as handOver is done
// with them, and of any left from now on up to the next Run here (reset):
// startAll's publishes each leave their own call as startAll's is left,
// which Run does not wait for without HandOverWait. A call still running
// holds the rows it publishes, a whole pass's, and this replica may never
// run the partition again; its next owner publishes them again anyway.
func (l *leftBehind) forget() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.late, l.forgotten = nil, true
}

func (l *leftBehind) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls, l.late, l.forgotten = nil, nil, false
	l.run++
}

func (l *leftBehind) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.calls)
}

// wait waits until every call left behind has returned, or until d has
// passed, and reports how many still run. The next Run starts the list
// anew (reset). A call added while it waits is waited for too: a pass's
// publishes of one topic each (startAll) are left behind as one call that
// returns once each publish has, as ctx ends, and each leaves its own
// call to the publisher, which may still run, behind first (await).
func (l *leftBehind) wait(d time.Duration) int {
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for i := 0; ; i++ {
		l.mu.Lock()
		if i == len(l.calls) {
			l.mu.Unlock()
			return 0
		}
		c := l.calls[i]
		l.mu.Unlock()
		select {
		case <-c:
		case <-timeout.C:
			l.mu.Lock()
			defer l.mu.Unlock()
			running := 0
			for _, c := range l.calls[i:] {
				select {
				case <-c:
				default:
					running++
				}
			}
			return running
		}
	}
}

// handOver waits, as Run returns, for the publishes its passes left
// behind, at most HandOverWait (see there), and deletes the rows Kafka
// acknowledged of them by then: the partition's next owner, which reads
// the table once Run has returned, does not publish them again. The rows
// of a publish that failed or still runs stay for it.
func (r *Relay) handOver(ctx context.Context, p *partition) {
	defer p.left.forget()
	if r.cfg.HandOverWait < 0 || p.left.count() == 0 {
		return
	}
	r.log.Info().Int32("partition", p.id).Msg("outbox: waiting for publishes Kafka has not answered as the partition's relay stops (a revoked partition is let go after them; a lost one is gone already)")
	if n := p.left.wait(r.cfg.HandOverWait); n > 0 {
		r.log.Warn().Int32("partition", p.id).Int("publishes", n).Dur("waited", r.cfg.HandOverWait).
			Msg("outbox: publishes Kafka has not answered are left running as the partition's relay stops: if they land, their records may come after the next owner's")
	}
	answers := p.left.answered()
	if len(answers) == 0 {
		return
	}
	lctx, cancel := beyond(ctx, queryTimeout)
	defer cancel()
	if !p.acquire(lctx) {
		return
	}
	defer p.release()
	r.deleteAtEnd(ctx, p, answers)
}

// deleteAtEnd, as Run ends, reports the rows Kafka acknowledged of the
// answers (publishes that returned after their pass), each at its own
// time, not the end of the wait for the others, and deletes them, rather
// than have the partition's next owner publish them again; the rest stay
// in the table. p.lock is held.
func (r *Relay) deleteAtEnd(ctx context.Context, p *partition, answers []answer) {
	ps := &passState{}
	for _, a := range answers {
		ps.at = a.at
		ps.ackWritten(p, a.u, a.err)
	}
	if ps.res.published == 0 {
		return
	}
	r.passDone(ctx, ps)
	if err := r.deleteAcked(ctx, p); err != nil {
		r.log.Warn().Err(err).Int32("partition", p.id).Msg("outbox: deleting rows published as the partition's relay stopped failed; the next owner publishes them again")
	}
}

func (r *Relay) message(x row) (*message.Message, error) {
	value, hs, err := topics.DecodeOutboxRow(x.value, x.headers)
	if err != nil {
		return nil, fmt.Errorf("%w: row %d: %v", errBadRow, x.id, err)
	}
	md := make(message.Metadata, len(hs)+1)
	var id string
	for _, h := range hs {
		k := h.Key
		if k == r.cfg.KeyMetadata || k == kafkapubsub.UUIDHeader {
			// A producer's, on a dead-letter copy: under its own name the
			// publisher would make it the key or a second UUID header.
			k = "original_" + k
		}
		md[k] = string(h.Value)
		if h.Key == topics.HeaderCEID {
			id = string(h.Value)
		}
	}
	if x.key != nil {
		md[r.cfg.KeyMetadata] = string(x.key)
	}
	if id == "" {
		// A function of the row (its rowRef: the id alone may be a lost
		// row's after a failover), so that its duplicates, which the relay
		// publishes when an answer is lost, carry one UUID, as rows with a
		// ce_id do.
		var b [64]byte
		name := strconv.AppendInt(append(b[:0], "urn:lockworker:outbox:"...), x.id, 10)
		name = strconv.AppendInt(append(name, ':'), x.created.UnixMicro(), 10)
		id = uuid.NewSHA1(uuid.NameSpaceURL, name).String()
	}
	m := message.NewMessage(id, value)
	m.Metadata = md
	return m, nil
}

// failed accounts a publish that failed because the topic cannot be
// written: one more attempt for the rows tried, then backoff or parking.
// When the database fails it, the topic backs off all the same: the next
// read must not select the same rows, and fail to account them again, with
// the other topics' rows behind them.
func (r *Relay) failed(ctx context.Context, p *partition, topic string, run []row, cause error, reason string) (err error) {
	ctx, cancel := context.WithTimeout(ctx, 2*queryTimeout) // the attempts, then the park
	defer cancel()
	defer func() {
		if err != nil {
			b := p.blocked[topic]
			b.failures++
			b.at = time.Now()
			b.until = b.at.Add(r.backoff(b.failures))
			p.blocked[topic] = b
		}
	}()
	ids, created := make([]int64, len(run)), make([]time.Time, len(run))
	for i, x := range run {
		ids[i], created[i] = x.id, x.created
	}
	var attempts int
	// Under the relay's settings, as its other statements: planned with
	// sequential scans on while the outbox was small, the session's cached
	// plan would scan the whole table once its backlog grew.
	b := &pgx.Batch{}
	queueSettings(b)
	b.Queue(failedSQL, ids, created, errorText(cause)).QueryRow(func(row pgx.Row) error { return row.Scan(&attempts) })
	if err = r.cfg.Pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("recording a failed publish of partition %d: %w", p.id, err)
	}
	log := r.log.With().Err(cause).Int32("partition", p.id).Str("topic", topic).Int("attempts", attempts).Logger()
	if attempts < r.cfg.MaxAttempts {
		now := time.Now()
		p.blocked[topic] = block{at: now, until: now.Add(r.backoff(attempts))}
		log.Warn().Msg("outbox: topic cannot be written; retrying")
		return nil
	}
	return r.parkTopic(ctx, p, topic, reason, log)
}

// failedSQL counts a failed publish of rows by rowRef (their ids $1,
// created_at $2) with its error $3, and returns the most attempts of them.
const failedSQL = `WITH u AS (UPDATE outbox SET attempts = attempts + 1, last_error = $3 WHERE ` + byRowRef + ` RETURNING attempts)
	SELECT coalesce(max(attempts), 0) FROM u`

// parkTopic parks the topic's waiting rows for reason (park) and ends its
// backoff: the reads leave it out until the park ends. log says which
// failure it was.
func (r *Relay) parkTopic(ctx context.Context, p *partition, topic, reason string, log zerolog.Logger) error {
	n, until, err := r.park(ctx, p, topic, reason)
	if n == 0 && err != nil {
		return fmt.Errorf("parking rows of partition %d for %q: %w", p.id, topic, err)
	}
	p.parked[topic] = true
	delete(p.blocked, topic)
	if err != nil {
		log.Error().AnErr("park_error", err).Int64("rows", n).Time("until", until).Str("reason", reason).
			Msg("outbox: topic cannot be written; its oldest rows parked, the park of the rest failed (they wait behind)")
	} else {
		log.Error().Int64("rows", n).Time("until", until).Str("reason", reason).Msg("outbox: topic cannot be written; rows parked")
	}
	if r.cfg.OnParked != nil && n > 0 {
		r.cfg.OnParked(reason, int(n))
	}
	return nil
}

// parkChunk bounds the rows one statement of a park updates
// (Config.parkChunk's default): the topic's backlog may be millions of
// rows, which one UPDATE would rewrite in one transaction, past its bound,
// parking none.
const parkChunk = 5000

// park parks every waiting row of the topic, so /health counts them and
// they are all retried together, in id order, when the park ends. Rows
// parked for good stay as they are, and rows published already (their
// delete pending) are not counted. It goes parkChunk rows at a time in id
// order, each chunk its own statement, all until the same time: when one
// fails (ctx's bound), the rows parked before it, the topic's oldest, hold
// back the rest as the whole park would (a read leaves out every row of a
// topic parked), and n counts them. The ids as an array, not IN (SELECT
// ...), which PostgreSQL joins with a scan of the whole table: each chunk
// walks the partition's stretch of outbox_waiting from the last one's id,
// then outbox_pkey. No equality on source_partition, for the reason
// selectRows gives: with one the generic plan walks outbox_pkey from the
// id, through every partition's rows (TestParkWalksOnlyItsPartition). The
// redundant source_partition >= $1 bounds the walk's cost to the
// partition's stretch: without it PostgreSQL costs the walk through a
// third of the index (source_partition <= $1's default selectivity) and,
// the outbox never analyzed, collects the partition's whole backlog with a
// bitmap and sorts it for each chunk, in the generic plan too
// (TestPlansByIndexWhateverTheStatistics). Rows
// whose earlier park ended and are still marked are left as they are: the
// reads take the mark off later, and they wait behind this park.
func (r *Relay) park(ctx context.Context, p *partition, topic, reason string) (n int64, until time.Time, err error) {
	chunk := cmp.Or(r.cfg.parkChunk, parkChunk)
	var after int64
	var at *time.Time // the first chunk's
	for {
		var got int64
		var last *int64
		err := r.cfg.Pool.QueryRow(ctx, `
			WITH u AS (
				UPDATE outbox SET parked_until = coalesce($6::timestamptz, now() + $3::interval), park_reason = $4
				WHERE id = ANY(ARRAY(
					SELECT id FROM outbox
					WHERE source_partition <= $1 AND source_partition >= $1 AND (source_partition, id) > ($1, $7) AND topic = $2 AND parked_until IS NULL
					  AND id <> ALL(coalesce($5::bigint[], '{}'))
					ORDER BY source_partition, id
					LIMIT $8))
				RETURNING id, parked_until)
			SELECT count(*), max(id), coalesce($6::timestamptz, max(parked_until), now() + $3::interval) FROM u`,
			p.id, topic, r.cfg.ParkFor, reason, refIDs(p.acked), at, after, chunk).Scan(&got, &last, &at)
		if err != nil {
			return n, until, err
		}
		n += got
		if at != nil {
			until = *at
		}
		if got < int64(chunk) || last == nil {
			return n, until, nil
		}
		after = *last
	}
}
