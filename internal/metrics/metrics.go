// Package metrics measures lockworker for Prometheus (on its own Registry,
// never the global one) and for the original node's JSON summary.
//
// Metrics implements worker.Metrics, worker.RestartMetrics,
// worker.LostMetrics and worker.WithdrawMetrics; Published fits
// outbox.Config.OnPublished and Parked outbox.Config.OnParked. Counters and
// histograms move as the worker commits; gauges describing the database
// (held locks, waiters, outbox) and the consumer lag are read when
// Prometheus scrapes, each read bounded by Config.QueryTimeout, so a scrape
// never hangs on a sick database. The database gauges' read is cached:
// statsMaxAge, and statsFailedAge for a failed one.
package metrics

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/topics"
)

// Namespace prefixes every metric name.
const Namespace = "lockworker"

// Config says where the scrape-time gauges come from. Zero values take the
// defaults given.
type Config struct {
	// Pool, when set, adds the database gauges (held locks, waiters, outbox
	// backlog), read at scrape time (cached: statsMaxAge).
	Pool *pgxpool.Pool
	// QueryTimeout bounds each scrape-time read. Default 2 s.
	QueryTimeout time.Duration
	// Hold, when set, runs each scrape-time read of PostgreSQL (the
	// database gauges', and the consumer lag's read of the stored offsets,
	// which WatchLag's lag runs through it, not its Kafka round trips) in
	// the HTTP side's bound on the pool's connections
	// (httpapi.DBSlots.Hold); QueryTimeout bounds the wait for it and the
	// read together. Default: the read runs at once.
	Hold func(ctx context.Context, read func(context.Context) error) error
	// Revision and SchemaVersion are lockworker_build_info's labels: the
	// revision the binary was built from (the one stamped at build, else
	// the VCS revision Go recorded, else "unknown") and the schema version
	// its migrations reach (store.LatestVersion).
	Revision      string
	SchemaVersion int
}

// Metrics is every measurement of one lockworker process.
type Metrics struct {
	// Registry holds lockworker's metrics plus the Go runtime and process
	// collectors; serve it with promhttp.HandlerFor.
	Registry *prometheus.Registry

	commands     *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	batchSize    prometheus.Histogram
	batchTime    prometheus.Histogram
	deadLettered *prometheus.CounterVec
	expired      *prometheus.CounterVec
	handoffs     prometheus.Counter
	holdTime     prometheus.Histogram
	waitTime     prometheus.Histogram
	unmeasured   prometheus.Counter
	published    prometheus.Counter
	publishLag   prometheus.Histogram
	parked       *prometheus.CounterVec
	dataLoss     prometheus.Counter
	commandsLost *prometheus.CounterVec
	restarts     prometheus.Counter
	dbRetries    *prometheus.CounterVec
	withdrawn    prometheus.Gauge

	vacuum       vacuumMetrics
	events       *eventTracker
	db           *dbCollector // nil without Config.Pool
	hold         func(context.Context, func(context.Context) error) error
	queryTimeout time.Duration
}

// Buckets, in seconds. Commands take milliseconds when healthy and seconds
// when the database retries; leases and waits run from milliseconds to a day.
var (
	latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	batchBuckets   = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000}
	leaseBuckets   = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 172800, 604800} // to max_hold's longest, 7 days
)

// New registers every metric on a new Registry.
func New(cfg Config) *Metrics {
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 2 * time.Second
	}
	if cfg.Hold == nil {
		cfg.Hold = func(ctx context.Context, read func(context.Context) error) error { return read(ctx) }
	}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_total",
			Help: "Commands applied, by operation and result (ok, queued, or the error_code of the answer).",
		}, []string{"operation", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "command_duration_seconds", Buckets: latencyBuckets,
			Help: "Time from a command's record being polled to its transaction's commit (the events' duration_ms), by operation.",
		}, []string{"operation"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "batch_records", Buckets: batchBuckets,
			Help: "Records applied per batch transaction.",
		}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "batch_duration_seconds", Buckets: latencyBuckets,
			Help: "Time a batch transaction took, retries included.",
		}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "dead_lettered_total",
			Help: "Records copied to the dead-letter topic, by reason: the error code they were answered with, or BATCH_TOO_LARGE for the marker of a commands batch skipped unread (it decompresses past the bound).",
		}, []string{"reason"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "expiries_total",
			Help: "Leases ended because they ran out (lock.expired). by=command: found by a command's transaction; by=scheduler: ended by the expiry scheduler or the periodic cleanup.",
		}, []string{"by"}),
		handoffs: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "handoffs_total",
			Help: "Locks granted to a waiter when a lease or a lock-delay ended (release, expiry, revoke, a session's end, cleanup): every grant answering someone other than the command's sender.",
		}),
		holdTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "lock_hold_seconds", Buckets: leaseBuckets,
			Help: "How long a lease was held: from acquired_at to its release or revoke, or to expires_at when it ran out.",
		}),
		waitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "lock_wait_seconds", Buckets: leaseBuckets,
			Help: "How long a queued acquire waited before it was granted (lock.queued to lock.acquired, database time).",
		}),
		unmeasured: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "lock_waits_unmeasured_total",
			Help: "Queued acquires whose wait lock_wait_seconds will not measure: this process already tracked 65,536 waits, none older than the longest wait_timeout plus a minute (looked for once a minute). A duplicate acquire, answered with its stored lock.queued again, does not count again.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "outbox_published_total",
			Help: "Outbox rows acknowledged by Kafka (at least once: a row whose relay stopped before deleting it is published, and counted, again by the next).",
		}),
		publishLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "outbox_publish_latency_seconds", Buckets: latencyBuckets,
			Help: "Per published batch: age of its oldest row when Kafka acknowledged it (commit to publish).",
		}),
		parked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "outbox_rows_parked_total",
			Help: "Outbox rows parked, by reason: the Kafka error that refused them (MESSAGE_TOO_LARGE, TOPIC_AUTHORIZATION_FAILED, ...) or UNREADABLE_HEADERS. A row counts again each time its park ends and it fails again.",
		}, []string{"reason"}),
		dataLoss: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "kafka_data_loss_total",
			Help: "Times the commands topic was found to have lost records the group had applied (an unclean leader election, a broker restarted without its unsynced tail) and the stored offset was moved back, so that the records numbered anew under the lost offsets are applied.",
		}),
		commandsLost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "commands_lost_total",
			Help: "Commands that will never be applied, by reason. retention: deleted by the commands topic's retention (or DeleteRecords) before any replica applied them, found when a partition was resumed below its log start (retention.ms shorter than an outage).",
		}, []string{"reason"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "partition_restarts_total",
			Help: "Times a partition's stored offset was found moved forward by another replica (its new owner, or a stale one still applying it until its client calls it lost) and the partition restarted from it: its records polled dropped and fetched again. An offset a batch finds gone back, below what this replica committed (PostgreSQL lost transactions), restarts the partition uncounted.",
		}),
		dbRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "db_retries_total",
			Help: "Transactions retried after a transient database error (store.Config.OnRetry), by reason: connection (PostgreSQL unreachable, refusing or dropping connections, read-only, starting up, shutting down, out of connection slots), conflict (serialization failure, deadlock, a lock another transaction held for over lock_timeout, a request_id applied by a concurrent transaction) or timeout (an attempt outlasted POSTGRES_ATTEMPT_TIMEOUT).",
		}, []string{"reason"}),
		withdrawn: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: Namespace, Name: "postgres_withdrawn",
			Help: "1 while this replica has given its partitions to the other replicas because PostgreSQL has not answered it for POSTGRES_UNREACHABLE_TIMEOUT; 0 otherwise.",
		}),
		vacuum: newVacuumMetrics(),
		events: newEventTracker(),
	}
	buildInfo := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; its labels say which build this process runs: revision, the revision it was built from (the one stamped at build, else the VCS revision Go recorded, else unknown), and schema_version, the schema version its migrations reach (its last migration's number).",
		ConstLabels: prometheus.Labels{"revision": cfg.Revision, "schema_version": strconv.Itoa(cfg.SchemaVersion)},
	}, func() float64 { return 1 })
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		buildInfo,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.commands, m.latency, m.batchSize, m.batchTime, m.deadLettered, m.expired,
		m.handoffs, m.holdTime, m.waitTime, m.unmeasured, m.published, m.publishLag, m.parked, m.dataLoss, m.commandsLost, m.restarts, m.dbRetries, m.withdrawn,
		m.vacuum.deadRows, m.vacuum.vacuumRuns,
	)
	// The series alerts take rate() of start at 0, so that the first event
	// raises them: a series born at 1 shows no increase.
	for _, code := range []string{topics.CodeInvalidRequest, topics.CodeUnsupportedVersion, topics.CodeUnauthenticated, topics.CodeForbidden, reasonBatchTooLarge} {
		m.deadLettered.WithLabelValues(code)
	}
	for _, reason := range []string{kerr.MessageTooLarge.Message, kerr.TopicAuthorizationFailed.Message, kerr.UnknownTopicOrPartition.Message, outbox.ReasonBadRow} {
		m.parked.WithLabelValues(reason)
	}
	m.commandsLost.WithLabelValues("retention")
	for _, reason := range RetryReasons {
		m.dbRetries.WithLabelValues(reason)
	}
	for _, result := range vacuumResults {
		m.vacuum.vacuumRuns.WithLabelValues(result)
	}
	m.hold, m.queryTimeout = cfg.Hold, cfg.QueryTimeout
	if cfg.Pool != nil {
		m.db = newDBCollector(held(m.hold, func(ctx context.Context) (LockStats, error) { return readLockStats(ctx, cfg.Pool) }), cfg.QueryTimeout)
		m.Registry.MustRegister(m.db)
	}
	return m
}

// LockStats returns the database gauges' numbers, for /health/locks: from
// the same cached read as the scrapes (statsMaxAge), or the read under way,
// waited for until ctx ends.
func (m *Metrics) LockStats(ctx context.Context) (LockStats, error) {
	if m.db == nil {
		return LockStats{}, errors.New("no database to read: metrics.Config.Pool is not set")
	}
	return m.db.lockStats(ctx)
}

// WatchLag adds lockworker_consumer_lag, read from lag
// (worker.Worker.LagHeld) at scrape time. lag is given Config.Hold, to run
// its read of PostgreSQL in, and that alone: its Kafka round trips hold
// no slot of the pool's connections. The worker is created after the
// relay, which needs Published: hence a method, not a Config field.
func (m *Metrics) WatchLag(lag func(ctx context.Context, hold func(context.Context, func(context.Context) error) error) (map[int32]int64, error)) {
	m.Registry.MustRegister(&partitionCollector{desc: lagDesc, read: func(ctx context.Context) (map[int32]int64, error) { return lag(ctx, m.hold) }, timeout: m.queryTimeout})
}

// WatchUndecided adds lockworker_commands_undecided, read from undecided
// (worker.Worker.Undecided) at scrape time: Kafka's round trips alone.
func (m *Metrics) WatchUndecided(undecided func(context.Context) (map[int32]int64, error)) {
	m.Registry.MustRegister(&partitionCollector{desc: undecidedDesc, read: undecided, timeout: m.queryTimeout})
}

// held is read run through hold (Config.Hold).
func held[T any](hold func(context.Context, func(context.Context) error) error, read func(context.Context) (T, error)) func(context.Context) (T, error) {
	return func(ctx context.Context) (v T, err error) {
		err = hold(ctx, func(ctx context.Context) error { v, err = read(ctx); return err })
		return v, err
	}
}

// Batch implements worker.Metrics.
func (m *Metrics) Batch(records int, took time.Duration) {
	m.batchSize.Observe(float64(records))
	m.batchTime.Observe(took.Seconds())
}

// Command implements worker.Metrics.
func (m *Metrics) Command(operation, result string, took time.Duration) {
	op := label(operation, operations)
	m.commands.WithLabelValues(op, label(result, results)).Inc()
	m.latency.WithLabelValues(op).Observe(took.Seconds())
}

// DeadLettered implements worker.Metrics.
func (m *Metrics) DeadLettered(reason string) {
	m.deadLettered.WithLabelValues(label(reason, deadLetterReasons)).Inc()
}

// DataLoss implements worker.Metrics.
func (m *Metrics) DataLoss() { m.dataLoss.Inc() }

// CommandsLost implements worker.LostMetrics.
func (m *Metrics) CommandsLost(reason string, n int64) {
	m.commandsLost.WithLabelValues(reason).Add(float64(n))
}

// PartitionRestarted implements worker.RestartMetrics.
func (m *Metrics) PartitionRestarted() { m.restarts.Inc() }

// Withdrawn implements worker.WithdrawMetrics.
func (m *Metrics) Withdrawn(out bool) {
	if out {
		m.withdrawn.Set(1)
	} else {
		m.withdrawn.Set(0)
	}
}

// Published is outbox.Config.OnPublished.
func (m *Metrics) Published(n int, oldest time.Duration) {
	m.published.Add(float64(n))
	m.publishLag.Observe(oldest.Seconds())
}

// Parked is outbox.Config.OnParked. Its reasons come from outbox.Classify,
// a fixed set, not from records.
func (m *Metrics) Parked(reason string, rows int) {
	m.parked.WithLabelValues(reason).Add(float64(rows))
}

// Label values come from untrusted records (a rejected command's operation):
// anything outside the contract's values is "other", so a producer cannot
// create series at will.
var (
	operations = topics.OperationNames()
	results    = append([]string{"ok", resultQueued}, topics.ErrorCodes...)
)

// resultQueued is the result of an acquire answered lock.queued.
const resultQueued = "queued"

// deadLetterReasons are the reasons a record goes to the dead-letter topic:
// an error code it was answered with, or reasonBatchTooLarge.
var deadLetterReasons = append(append([]string{}, topics.ErrorCodes...), reasonBatchTooLarge)

// reasonBatchTooLarge is worker.DeadLetterBatchTooLarge, the reason of a
// marker for a batch skipped unread, spelled out so metrics need not import
// the worker.
const reasonBatchTooLarge = "BATCH_TOO_LARGE"

func label(v string, allowed []string) string {
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	return "other"
}
