package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/config"
	"github.com/omninode/lockworker/internal/embedded"
	"github.com/omninode/lockworker/internal/failstreak"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/kafkalog"
	"github.com/omninode/lockworker/internal/kafkaretry"
	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/outbox"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
	"github.com/omninode/lockworker/worker"
)

// Main is the whole service, so end-to-end tests start the real wiring:
// NewMain, set Config (or ParseEnv), Run(ctx), then Close.
type Main struct {
	Config config.Config
	Logger zerolog.Logger

	// Serving is closed once the HTTP endpoints listen, first of all;
	// HTTPAddr then says where (the bound address, so HTTP_ADDR may be
	// ":0"). Until Ready they answer as httpapi.Starting does, and /health
	// goes on doing so until the worker has joined its consumer group.
	Serving  chan struct{}
	HTTPAddr string
	// HTTPReadTimeout bounds reading a request, body included (NewMain:
	// 10 s). No endpoint reads a body, but net/http reads a declared one
	// before answering: without a bound, a client that never sends it holds
	// a goroutine and one of the file descriptors pgx and kgo need too. It
	// must exceed the header timeout plus the longest handler (/metrics, 4
	// s): net/http cancels the connection's context, every later request's
	// on it too, when a handler outlasts it (golang/go#70834).
	HTTPReadTimeout time.Duration
	// KafkaSilentWarn is how long the start's first Kafka request waits
	// for an answer before a warn line says so (NewMain: 10 s): a broker
	// that accepts connections and never answers ends an attempt only
	// when the Kafka client gives up, about 40 s, which no other line
	// would tell from a replica that hangs.
	KafkaSilentWarn time.Duration
	// SchemaCheckInterval is how often a replica that consumes checks
	// that the schema still allows its version (watchSchema): how long, at
	// most, it runs on beside a migration that declared it unable to,
	// before it stops. 0: defaultSchemaCheck (5 s).
	SchemaCheckInterval time.Duration
	// Ready is closed once everything is wired and the worker is about to
	// join its consumer group and consume (worker.Run); Brokers then says
	// where Kafka is.
	Ready   chan struct{}
	Brokers []string
	// Embedded is the embedded broker, when Run started one.
	Embedded *embedded.Broker

	mu      sync.Mutex
	closers []closer
	// handler serves HTTP: httpapi.Starting's, then httpapi.New's, whose
	// /health answers as Starting's until the worker joined its group
	// (joiningHealth); step is what Starting's says Run is doing.
	handler atomic.Pointer[http.Handler]
	step    atomic.Pointer[string]
	// stopStep is what the stop does now, once Run is wired: the drain,
	// then Close's steps (stopAt).
	stopStep atomic.Pointer[string]
	started  time.Time
	stopHTTP func()
	// stderr is where the log goes (ParseEnv), and a failure the log
	// level drops (failed).
	stderr io.Writer
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{Config: config.Default(), Logger: zerolog.New(os.Stderr).With().Timestamp().Logger(), stderr: os.Stderr,
		Serving: make(chan struct{}), Ready: make(chan struct{}), HTTPReadTimeout: 10 * time.Second, KafkaSilentWarn: 10 * time.Second}
}

// ParseEnv reads the configuration from the environment (lookup: as
// os.LookupEnv) and sets up logging. A setting it refuses is errRefused.
func (m *Main) ParseEnv(lookup func(string) (string, bool)) error {
	// Any other variable set to nothing means unset. This one would start
	// the embedded development broker instead of reaching Kafka: a
	// deployment template's missing value would give each replica a broker
	// of its own, ready and out of every client's reach. Refused alone:
	// the other checks would take it as unset, and refuse what only the
	// embedded broker cannot do.
	if v, set := lookup("KAFKA_BOOTSTRAP_SERVERS"); set && strings.TrimSpace(v) == "" {
		return fmt.Errorf("%w: KAFKA_BOOTSTRAP_SERVERS: is set but empty (unset it to start the embedded development broker)", errRefused)
	}
	cfg, err := config.WorkerFromEnv(func(k string) string { v, _ := lookup(k); return v })
	if err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	m.Config = cfg
	var out = zerolog.New(m.stderr)
	if cfg.LogFormat == "console" {
		out = zerolog.New(zerolog.ConsoleWriter{Out: m.stderr, TimeFormat: time.RFC3339, NoColor: !terminal(m.stderr)})
	}
	m.Logger = out.Level(cfg.LogLevel).With().Timestamp().Str("instance", cfg.InstanceID).Logger()
	return nil
}

// terminal says whether w is a terminal: colours written to a file or a
// pipe (`2> worker.log`, a log collector) are escape codes in its lines.
func terminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// closer is a step of Close: f, which step says, for a stop that
// outlasts its deadline.
type closer struct {
	step string
	f    func()
}

func (m *Main) onClose(step string, f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closers = append(m.closers, closer{step, f})
}

// Close releases everything Run opened, in reverse order.
func (m *Main) Close() {
	m.mu.Lock()
	closers := m.closers
	m.closers = nil
	m.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		m.stopping(closers[i].step)
		closers[i].f()
	}
}

// stopping says what the stop does now.
func (m *Main) stopping(step string) { m.stopStep.Store(&step) }

// stopAt is what the stop does now: a step of the drain or of Close, or,
// stopped while starting, the start's step.
func (m *Main) stopAt() string {
	if s := m.stopStep.Load(); s != nil {
		return *s
	}
	if s := m.step.Load(); s != nil {
		return "starting: " + *s
	}
	return "starting"
}

func (m *Main) names() topics.Names { return m.Config.Topics.Names() }

// Run starts the service and blocks until ctx is done and it has drained.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	log := m.Logger
	// ParseEnv validated it; a Config built in code is checked here too,
	// lockworker's own rules included, but not its ranges, which only
	// WorkerFromEnv checks while parsing.
	if err := cfg.ValidateWorker(); err != nil {
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	// Which build, and which schema it migrates to, for a fleet's upgrade:
	// lockworker_build_info says the same.
	build := revision()
	log.Info().Str("revision", build).Int("binary_version", store.LatestVersion()).Interface("config", cfg.Redacted()).Msg("starting lockworker")
	if strings.EqualFold(cfg.Kafka.SASL.Mechanism, "PLAIN") && !cfg.Kafka.TLS.Enabled {
		log.Warn().Msg("KAFKA_SASL_MECHANISM=PLAIN without KAFKA_TLS_ENABLED: the SASL password crosses the network as is")
	}
	if cfg.Kafka.TLS.InsecureSkipVerify {
		log.Warn().Msg("KAFKA_TLS_INSECURE_SKIP_VERIFY=true: any broker certificate is accepted, so whoever sits between lockworker and Kafka can read and change its traffic, SASL password included (for tests only)")
	}
	if cfg.Auth.Required && cfg.InspectToken == "" {
		// The namespace claims guard Kafka only: an operator turning
		// authentication on may take HTTP for guarded too.
		log.Warn().Str("http_addr", cfg.HTTPAddr).Msg("AUTH_REQUIRED=true without INSPECT_TOKEN: the HTTP inspection endpoints (/locks/*, /sessions/*, /health/locks) stay open to anyone who reaches HTTP_ADDR, and show every namespace's holders, owner ids, fencing tokens and session ids; set INSPECT_TOKEN, or keep the port private")
	}
	if cfg.Auth.Required && cfg.Auth.Keys != "" && cfg.Auth.Audience == "" {
		// An organisation's identity provider as issuer signs tokens for
		// every application it serves.
		log.Warn().Str("auth_keys", cfg.Auth.Keys).Msg("AUTH_KEYS without AUTH_AUDIENCE: any token its issuers sign, for any application, is accepted here (its sub is a requester, its admin and namespaces claims are honoured); set AUTH_AUDIENCE to the aud they put in lockworker's tokens")
	}
	names := m.names()
	// First, so that a taken HTTP_ADDR fails at once, and probes can tell
	// a replica migrating or checking its topics from one that hangs.
	if err := m.listenHTTP(); err != nil {
		return err
	}

	// Which brokers and why, in the log and in the first connection error:
	// KAFKA_BOOTSTRAP_SERVERS exported for an SDK program also turns the
	// embedded broker off here.
	chosenBy := "from KAFKA_BOOTSTRAP_SERVERS, which turns the embedded broker off"
	if cfg.EmbeddedKafka() {
		chosenBy = "the embedded broker, started because KAFKA_BOOTSTRAP_SERVERS is unset"
		m.starting("starting the embedded Kafka broker")
		// The worker creates its topics below, as it does on real Kafka.
		b, err := embedded.Start(ctx, embedded.Options{Addr: cfg.Embedded.Addr, Dir: cfg.Embedded.Dir,
			MinSessionTimeout: cfg.Embedded.MinSessionTimeout, Logger: log})
		if err != nil {
			return fmt.Errorf("starting the embedded Kafka broker on EMBEDDED_KAFKA_ADDR %s (KAFKA_BOOTSTRAP_SERVERS is unset): %w", cfg.Embedded.Addr, err)
		}
		m.onClose("stopping the embedded Kafka broker", b.Close)
		m.Embedded = b
		cfg.Kafka.BootstrapServers = []string{b.Addr()}
		// The broker's own line says it is for development; this, what a
		// deployment that forgot or misspelt KAFKA_BOOTSTRAP_SERVERS gets:
		// replicas that are ready, and that no command reaches.
		log.Warn().Str("addr", b.Addr()).Msg("the embedded development Kafka broker is running, and nothing outside this process shares it: each replica started without KAFKA_BOOTSTRAP_SERVERS has a broker and consumer group of its own, which only clients of " +
			b.Addr() + " reach; set KAFKA_BOOTSTRAP_SERVERS to use a Kafka cluster")
	}
	log.Info().Strs("brokers", cfg.Kafka.BootstrapServers).Msg("using Kafka at " + strings.Join(cfg.Kafka.BootstrapServers, ",") + ": " + chosenBy)
	m.Brokers = cfg.Kafka.BootstrapServers
	kopts, err := cfg.KafkaOpts()
	if err != nil { // a TLS file unreadable or invalid
		return fmt.Errorf("%w: %w", errRefused, err)
	}
	// Before PostgreSQL, which the start may wait for: a refused key file
	// stops it at once.
	var verifier *auth.Verifier
	if cfg.Auth.Required {
		alog := log.With().Str("component", "auth").Logger()
		verifier, err = auth.NewVerifier(auth.Config{KeysPath: cfg.Auth.Keys, RequesterKeysPath: cfg.Auth.RequesterKeys, HMACKeyFile: cfg.Auth.HMACKeyFile,
			Audience: cfg.Auth.Audience, Issuer: cfg.Auth.Issuer,
			OnReload: func(keys int, err error) {
				if err != nil {
					alog.Error().Err(err).Int("keys", keys).Msg("reloading the verification keys failed; the keys read before stay in force")
					return
				}
				alog.Info().Int("keys", keys).Msg("verification keys reloaded")
			}})
		if err != nil {
			return fmt.Errorf("%w: AUTH_REQUIRED: %w", errRefused, err)
		}
		m.onClose("stopping the verification keys' reloads", verifier.Close)
		log.Info().Msg("requester authentication is required: commands without a valid token are dead-lettered")
	}
	kopts = append(kopts, kgo.WithLogger(kafkalog.Client(log.With().Str("component", "kafka").Logger())))

	m.starting("connecting to PostgreSQL")
	// Every transaction's retry counts in lockworker_db_retries_total (once
	// the metrics exist, after the pool); the log has a line per streak,
	// not per retry: during an outage each transaction in flight retries.
	// A streak per reason: conflicts come and go under load, and must not
	// keep an outage's streak from starting with a line of its own.
	var retryMetrics atomic.Pointer[metrics.Metrics]
	retries := map[string]*retryLog{}
	for _, reason := range metrics.RetryReasons {
		r := &retryLog{log: log.With().Str("component", "store").Str("reason", reason).Logger()}
		retries[reason] = r
		m.onClose("stopping the database retry log", r.stop)
	}
	st, err := store.Open(ctx, store.Config{
		URL: cfg.PostgresURL(), MinConns: cfg.Postgres.MinConns, MaxConns: cfg.Postgres.MaxConns,
		RetryBase: cfg.AcquireRetryDelay, AttemptTimeout: cfg.Postgres.AttemptTimeout,
		OnRetry: func(attempt int, err error, delay time.Duration) {
			if mets := retryMetrics.Load(); mets != nil {
				mets.DBRetry(attempt, err, delay)
			}
			if r := retries[metrics.RetryReason(err)]; r != nil {
				r.retry(attempt, err, delay)
			}
		},
		// PostgreSQL unreachable at start (a failover, maintenance): wait
		// for it as a transaction would, rather than exit and crash-loop.
		// Only when every attempt failed for a reason no retry cures (a
		// role refused, no database, a certificate) does it fail at once;
		// anything else is retried, a warn line each (store.Config.RetryStart).
		RetryStart:   true,
		OnStartRetry: m.onStartRetry(log, "database"),
	})
	if errors.Is(err, store.ErrConnString) { // not parsed, or a file it names (sslrootcert, ...) unreadable
		setting := "DATABASE_URL"
		if cfg.Postgres.URL == "" {
			setting = "POSTGRES_*"
		}
		// store's error does not say which parameter, when a file's
		// contents are refused (a CA file that is not PEM, say).
		if named := cfg.PostgresParamRefusal(); named != nil {
			err = fmt.Errorf("%w: %w", store.ErrConnString, named)
		}
		return fmt.Errorf("%w: %s: %w", errRefused, setting, err)
	}
	if err != nil {
		return err
	}
	m.onClose("closing the PostgreSQL pool", st.Close)
	m.starting("migrating the database")
	// Info, not debug: a migration may wait for locks (retried, a warn line
	// each, see store.MigrationLockTimeout) or run long on a large table.
	if err := st.MigrateWith(ctx, store.MigrateEvents{
		Pending: func(from, to int) {
			log.Info().Int("schema_version", from).Int("target_version", to).Msg("database schema is behind this binary; taking the migration lock")
		},
		WaitingForLock: func() {
			log.Info().Msg("waiting for the migration lock: another replica, or a migration of another schema in this database, holds it")
		},
		Started: func(name string) { log.Info().Str("migration", name).Msg("applying migration") },
		Applied: func(name string, took time.Duration) {
			log.Info().Str("migration", name).Dur("took", took).Msg("migration applied")
		},
		Newer: func(version, latest, oldestReader int) {
			log.Warn().Int("schema_version", version).Int("binary_version", latest).Int("oldest_reader", oldestReader).
				Msg("database schema is newer than this binary, and its migrations declare this binary's version compatible: running on it; finish the upgrade")
		},
	}); err != nil {
		return err
	}

	// The relay's own deadline comes after the client's: kgo's error, which
	// says why a record failed (a missing topic, say), is what the relay
	// classifies, not a deadline's.
	const deliveryTimeout = 30 * time.Second
	m.starting("setting up the Kafka clients")
	// AUTO_CREATE_REPLY_TOPICS: the relay creates reply topics, and no
	// other; it purges deleted reply topics either way.
	// The relay's producer alone refreshes metadata a second after a failed
	// refresh: replies and events caught in a broker's outage go a second
	// after it is back (kafkaretry.MetadataOpt).
	pub, pubClient, err := outbox.NewKafkaPublisher(append(slices.Clip(kopts), kafkaretry.MetadataOpt(), cfg.CompressionOpt()), deliveryTimeout, cfg.Topics.ReplyPrefix, cfg.Topics.AutoCreateReplyTopics, cfg.Topics.ReplicationFactor)
	if err != nil {
		return err
	}
	m.onClose("closing the outbox relay's Kafka client", pubClient.Close)
	// The HTTP side's share of the pool, which /metrics's reads take too.
	dbSlots := httpapi.NewDBSlots(st.Pool.Config().MaxConns)
	mets := metrics.New(metrics.Config{Pool: st.Pool, Hold: dbSlots.Hold, Revision: build, SchemaVersion: store.LatestVersion()})
	retryMetrics.Store(mets)
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, MaxAttempts: cfg.RelayMaxAttempts, PublishTimeout: deliveryTimeout + 5*time.Second,
		Logger: log.With().Str("component", "relay").Logger(), OnPublished: mets.Published, OnParked: mets.Parked})
	if err != nil {
		return err
	}

	w, err := worker.New(worker.Config{
		KafkaOpts: append(slices.Clip(kopts), cfg.GroupOpts()...), GroupInstanceID: cfg.Kafka.GroupInstanceID, Group: cfg.Kafka.ConsumerGroup, Names: names, CommandsPartitions: cfg.Topics.CommandsPartitions,
		ReplicationFactor: cfg.Topics.ReplicationFactor, WarnUnreplicated: m.Embedded == nil, // KAFKA_BOOTSTRAP_SERVERS set
		Store: st, Relay: relay, DefaultLease: cfg.DefaultLeaseDuration, RequireFencingToken: cfg.RequireFencingToken, TokenFloorCheck: cfg.TokenFloorCheck, Auth: verifier,
		MaxReplyTopics: cfg.Topics.MaxReplyTopics, CreateReplyTopics: cfg.Topics.AutoCreateReplyTopics, Instance: cfg.InstanceID,
		CleanupInterval: cfg.CleanupInterval, RequestRetention: cfg.RequestRetention, EventsRetention: cfg.LockEventsRetention, NoHistory: cfg.LockEventsRetention == 0,
		DeadLetterMaxBytes: cfg.DeadLetterMaxBytes, PlainEvents: !cfg.CompactStoredEvents,
		UnreachableTimeout: cmp.Or(cfg.Postgres.UnreachableTimeout, -1), // 0: never withdraw
		Logger:             log.With().Str("component", "worker").Logger(), Metrics: mets,
	})
	if err != nil {
		return err
	}
	leave := sync.OnceFunc(w.Close)
	m.onClose(leavingGroup, leave)
	mets.WatchLag(w.LagHeld)
	mets.WatchUndecided(w.Undecided)
	vac, err := worker.NewVacuumer(worker.VacuumConfig{
		Store: st, Enabled: cfg.VacuumEnabled, Interval: cfg.VacuumInterval, DeadRows: int64(cfg.VacuumDeadRows),
		Logger: log.With().Str("component", "vacuum").Logger(), Metrics: mets,
	})
	if err != nil {
		return err
	}
	m.starting("checking the Kafka topics")
	// The first request to Kafka. Kafka unreachable (a broker restarting,
	// its Service not created yet) is waited for, as PostgreSQL is, rather
	// than exit and crash-loop; what no wait cures (SASL, authorization,
	// TLS) fails at once. Each retry says why these brokers, as the
	// give-up error does: the first Kafka error a reader meets.
	klog := log.With().Strs("brokers", cfg.Kafka.BootstrapServers).Str("brokers_source", chosenBy).Logger()
	if err := store.RetryWith(ctx, cfg.AcquireRetryDelay, kafkaUnreachable, m.onStartRetry(klog, "Kafka"),
		func() error {
			defer m.warnIfSilent(klog, "Kafka")()
			return w.EnsureTopics(ctx)
		}); err != nil {
		// Say what to check.
		return fmt.Errorf("talking to Kafka at %v (%s; see also KAFKA_TLS_* and KAFKA_SASL_*): %w",
			cfg.Kafka.BootstrapServers, chosenBy, err)
	}
	if cfg.Kafka.GroupProtocol == config.GroupProtocolConsumer {
		// Once Kafka answers, and before the worker's client joins (in
		// w.Run): the broker arms a member's session with the group's
		// timeout at each heartbeat, so a crash before the first
		// heartbeat after a later change would still wait out the
		// broker's default (45 s).
		m.starting("setting the consumer group's session timeout")
		setGroupConfigs(ctx, pubClient, cfg, log)
	}

	// Before anything grants a token: after PostgreSQL lost committed
	// transactions, its sequence would hand out again tokens Kafka has
	// published (docs/design.md "PostgreSQL lost transactions").
	// TOKEN_FLOOR_CHECK decides what Kafka failing the check does.
	m.starting("checking the fencing tokens against the lock.acquired topic")
	if _, err := w.RaiseTokenFloor(ctx); err != nil {
		return err
	}

	m.starting("publishing the first lock states")
	if n, err := w.PublishFirstStates(ctx); err != nil {
		return err
	} else if n > 0 {
		log.Info().Int("locks", n).Str("topic", names.State).Msg("published the first state of the locks from before revisions")
	}

	// Consuming stops as after a signal, draining, once a migration
	// applied meanwhile declared this binary unable to run on the schema
	// (watchSchema); Run then returns the start's error for it.
	ctx, stopConsuming := context.WithCancelCause(ctx)
	watched := make(chan error, 1)
	go func() {
		schemaLog := log.With().Str("component", "schema").Logger()
		err := watchSchema(ctx, st.CheckSchema, cmp.Or(m.SchemaCheckInterval, defaultSchemaCheck), schemaLog)
		if err != nil {
			schemaLog.Error().Err(err).Msg("a migration applied since this replica started does not allow its version: stopping; draining, then exiting")
			stopConsuming(err)
		}
		watched <- err
	}()

	// /health says draining from the signal, or from the moment the
	// worker stops on its own (a refused group or commands topic, a
	// refused session timeout, a schema that no longer allows it): a
	// replica that cannot consume is not ready during its drain and Close
	// either.
	stopping := make(chan struct{})
	stop := sync.OnceFunc(func() { close(stopping) })
	defer context.AfterFunc(ctx, stop)()
	go func() {
		select {
		case <-w.Stopping(): // before its drain
			stop()
		case <-stopping:
		}
	}()
	full := httpapi.New(httpapi.Config{
		Pool: st.Pool, DBSlots: dbSlots, Kafka: w.Client(), Metrics: mets, Partitions: w.Partitions, Stopping: stopping, Withdrawn: w.Withdrawn, Vacuum: vac.Status,
		Instance: cfg.InstanceID, Group: cfg.Kafka.ConsumerGroup, Started: m.started, InspectToken: cfg.InspectToken, Logger: log.With().Str("component", "http").Logger(),
	})
	m.starting("joining the consumer group")
	h := joiningHealth(full, httpapi.Starting(cfg.InstanceID, m.started, func() string { return *m.step.Load() }), w.Joined(), stopping)
	m.handler.Store(&h)
	// Again, to run before the pool closes: the endpoints read it.
	m.onClose(stoppingHTTP, m.stopHTTP)
	// Again, to run first: the group is left at once, not after the HTTP
	// server's requests in flight.
	m.onClose(leavingGroup, leave)

	// The vacuum loop stops with the worker's drain, before the pool closes.
	vctx, stopVacuum := context.WithCancel(ctx)
	vacuumed := make(chan struct{})
	go func() { defer close(vacuumed); vac.Run(vctx) }()
	defer func() {
		m.stopping("stopping the vacuum loop")
		stopVacuum()
		<-vacuumed
	}()

	close(m.Ready)
	// Read only once stopped: Run is consuming now.
	m.stopping(draining)
	log.Info().Strs("brokers", cfg.Kafka.BootstrapServers).Str("commands", names.Commands).Msg("lockworker is consuming")
	err = w.Run(ctx)
	stop() // however Run ended
	stopConsuming(nil)
	return cmp.Or(err, <-watched) // the watch ended before the pool closes
}

// The stop's steps named twice (onClose), and the drain's.
const (
	leavingGroup = "leaving the consumer group"
	stoppingHTTP = "stopping the HTTP server"
	draining     = "draining: the batches in flight, then each partition's outbox relay's last publishes and hand-over"
)

// joiningHealth is full, except that /health answers as starting does
// (503 "starting", the step "joining the consumer group") until joined is
// closed (worker.Worker.Joined: the worker has completed a join of its
// consumer group, with or without partitions), or stopping is (full's
// /health then says draining). The other endpoints serve at once.
func joiningHealth(full, starting http.Handler, joined, stopping <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			select {
			case <-joined:
			case <-stopping:
			default:
				starting.ServeHTTP(rw, r)
				return
			}
		}
		full.ServeHTTP(rw, r)
	})
}

// starting says what Run does now, on the log and on /health until the
// service is wired and, for /health, until the worker has joined its group.
func (m *Main) starting(step string) {
	m.step.Store(&step)
	m.Logger.Debug().Str("step", step).Msg("starting")
}

// listenHTTP serves the health and metrics endpoints on HTTP_ADDR until
// Close, which lets requests in flight finish: httpapi.Starting's until Run
// installs httpapi.New's. It keeps serving while Run drains, so probes see
// "draining" rather than a refused connection.
func (m *Main) listenHTTP() error {
	ln, err := net.Listen("tcp", m.Config.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listening on HTTP_ADDR %s: %w", m.Config.HTTPAddr, err)
	}
	m.starting("starting")
	m.started = time.Now()
	h := httpapi.Starting(m.Config.InstanceID, m.started, func() string { return *m.step.Load() })
	m.handler.Store(&h)
	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*m.handler.Load()).ServeHTTP(w, r)
	})
	// From the start: a replica on the embedded broker says so while it
	// starts too, not only once it serves.
	if m.Config.EmbeddedKafka() {
		handler = httpapi.WithEmbeddedKafka(handler)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       m.HTTPReadTimeout,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		// Go's default is 1 MB per request. The endpoints need a path
		// (a lock name, a session id) and an Authorization header with
		// the INSPECT_TOKEN (at most config.MaxInspectTokenBytes).
		MaxHeaderBytes: maxHTTPHeaderBytes,
		// net/http's own complaints (a query with ';', a bad TLS
		// handshake...) go to our log, not stderr, and a client cannot
		// flood it with them.
		ErrorLog: stdlog.New(m.Logger.With().Str("component", "http").Logger().
			Sample(&zerolog.BurstSampler{Burst: 5, Period: time.Minute}), "", 0),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	m.HTTPAddr = ln.Addr().String()
	close(m.Serving)
	m.Logger.Info().Str("addr", m.HTTPAddr).Msg("serving health and metrics over HTTP")
	m.stopHTTP = sync.OnceFunc(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			m.Logger.Warn().Err(err).Msg("HTTP server shutdown")
			_ = srv.Close()
		}
		<-done
	})
	m.onClose(stoppingHTTP, m.stopHTTP)
	return nil
}

// maxHTTPHeaderBytes bounds a request's line and headers.
const maxHTTPHeaderBytes = 16 << 10

// setGroupConfigs gives a consumer-protocol (KIP-848) group its session
// timeout and heartbeat: under KIP-848 they are the group's configs, not the
// client's. Brokers bound them (Apache Kafka: group.consumer.min.session.
// timeout.ms, 45 s by default) or may not allow the change; lockworker then
// runs with what the broker has and says so, since refusing to start would
// turn a slower failover into no service at all.
func setGroupConfigs(ctx context.Context, cl *kgo.Client, cfg config.Config, log zerolog.Logger) {
	req := kmsg.NewPtrIncrementalAlterConfigsRequest()
	res := kmsg.NewIncrementalAlterConfigsRequestResource()
	res.ResourceType = kmsg.ConfigResourceTypeGroupConfig
	res.ResourceName = cfg.Kafka.ConsumerGroup
	want := cfg.GroupConfigs()
	for name, v := range want {
		c := kmsg.NewIncrementalAlterConfigsRequestResourceConfig()
		c.Name = name
		c.Value = kmsg.StringPtr(v)
		c.Op = kmsg.IncrementalAlterConfigOpSet
		res.Configs = append(res.Configs, c)
	}
	req.Resources = append(req.Resources, res)
	resp, err := req.RequestWith(ctx, cl)
	if err != nil && ctx.Err() != nil {
		return // stopped: the next step reports it
	}
	if err != nil {
		// Not the broker's answer: Kafka, reached for the topics just
		// before, did not answer this one.
		log.Warn().Err(err).Interface("wanted", want).Str("group", cfg.Kafka.ConsumerGroup).
			Msg("KAFKA_GROUP_PROTOCOL=consumer: could not ask Kafka to set the group's session timeout and heartbeat; the group keeps the broker's")
		return
	}
	for _, r := range resp.Resources {
		if err = kerr.ErrorForCode(r.ErrorCode); err != nil {
			if r.ErrorMessage != nil {
				err = fmt.Errorf("%w: %s", err, *r.ErrorMessage)
			}
			break
		}
	}
	if err != nil {
		log.Warn().Err(err).Interface("wanted", want).Str("group", cfg.Kafka.ConsumerGroup).
			Msg("KAFKA_GROUP_PROTOCOL=consumer: the broker did not take the group's session timeout and heartbeat; failover takes the broker's group.consumer.session.timeout.ms (45 s by default) — lower the broker's group.consumer.min.session.timeout.ms and group.consumer.min.heartbeat.interval.ms, grant ALTER_CONFIGS on the group, or use KAFKA_GROUP_PROTOCOL=classic")
		return
	}
	log.Info().Interface("configs", want).Str("group", cfg.Kafka.ConsumerGroup).Msg("set the consumer group's session timeout and heartbeat")
}

// retryLog logs the transactions' retries after transient database errors
// (store.Config.OnRetry) as one streak for the whole process: its first
// retry at once, then at most one line per failstreak.DefaultEvery with the
// retries so far, rather than one line per retry of each transaction in
// flight. The store says when a transaction retries, not when one succeeds:
// the streak ends once no transaction retried for retryQuiet (longer than
// the longest backoff, store.DefaultRetryMax), with one info line.
type retryLog struct {
	log   zerolog.Logger
	quiet time.Duration // default retryQuiet

	mu      sync.Mutex
	stopped bool // the process is closing: nothing more is logged
	streak  failstreak.Streak
	timer   *time.Timer // ends the streak; nil before the first retry
	last    time.Time   // the last retry
}

// retryQuiet is how long no transaction retries before a streak ends.
const retryQuiet = failstreak.DefaultEvery

func (r *retryLog) retry(attempt int, err error, delay time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.last = time.Now()
	_, ev := r.streak.Fail(&r.log, err)
	ev.Int("attempt", attempt).Dur("retry_in", delay).Msg("transient database error; retrying the transaction")
	quiet := r.quiet
	if quiet <= 0 {
		quiet = retryQuiet
	}
	if r.timer == nil {
		r.timer = time.AfterFunc(quiet, r.end)
	} else {
		r.timer.Reset(quiet)
	}
}

// end ends the streak after a quiet spell.
func (r *retryLog) end() {
	r.mu.Lock()
	defer r.mu.Unlock()
	quiet := r.quiet
	if quiet <= 0 {
		quiet = retryQuiet
	}
	if r.stopped || time.Since(r.last) < quiet { // closing; or a retry came as the timer fired: it was reset
		return
	}
	r.streak.OK(&r.log).Dur("quiet_for", quiet).Msg("no transaction retried lately: the transient database errors stopped")
}

// stop drops a streak's end line still due (the process is closing).
func (r *retryLog) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopped = true
	if r.timer != nil {
		r.timer.Stop()
	}
}
