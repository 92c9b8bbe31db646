package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/config"
	"github.com/omninode/lockworker/embedded"
	"github.com/omninode/lockworker/httpapi"
	"github.com/omninode/lockworker/internal/auth"
	"github.com/omninode/lockworker/internal/kafkalog"
	"github.com/omninode/lockworker/metrics"
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

	// Ready is closed once everything is wired and the worker is about to
	// join its group; Brokers then says where Kafka is, and HTTPAddr where the
	// health and metrics endpoints listen (the bound address, so HTTP_ADDR
	// may be ":0").
	Ready    chan struct{}
	Brokers  []string
	HTTPAddr string
	// Embedded is the embedded broker, when Run started one.
	Embedded *embedded.Broker

	mu      sync.Mutex
	closers []func()
}

// NewMain returns a Main with the default configuration.
func NewMain() *Main {
	return &Main{Config: config.Default(), Logger: zerolog.New(os.Stderr).With().Timestamp().Logger(), Ready: make(chan struct{})}
}

// ParseEnv reads the configuration from the environment and sets up logging.
func (m *Main) ParseEnv(getenv func(string) string) error {
	cfg, err := config.FromEnv(getenv)
	if err != nil {
		return err
	}
	m.Config = cfg
	var out = zerolog.New(os.Stderr)
	if cfg.LogFormat == "console" {
		out = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.RFC3339})
	}
	m.Logger = out.Level(cfg.LogLevel).With().Timestamp().Str("instance", cfg.InstanceID).Logger()
	return nil
}

func (m *Main) onClose(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closers = append(m.closers, f)
}

// Close releases everything Run opened, in reverse order.
func (m *Main) Close() {
	m.mu.Lock()
	closers := m.closers
	m.closers = nil
	m.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
}

func (m *Main) names() topics.Names {
	t := m.Config.Topics
	return topics.Names{Commands: t.Commands, Acquired: t.LockAcquired, Released: t.LockReleased, Expired: t.LockExpired,
		DeadLetter: t.DeadLetter, ReplyPrefix: t.ReplyPrefix}
}

// Run starts the service and blocks until ctx is done and it has drained.
func (m *Main) Run(ctx context.Context) error {
	cfg := m.Config
	log := m.Logger
	log.Info().Interface("config", cfg.Redacted()).Msg("starting lockworker")
	names := m.names()

	if cfg.EmbeddedKafka() {
		// The worker creates its topics below, as it does on real Kafka.
		b, err := embedded.Start(ctx, embedded.Options{Addr: cfg.Embedded.Addr, Dir: cfg.Embedded.Dir, Logger: log})
		if err != nil {
			return fmt.Errorf("starting the embedded Kafka broker: %w", err)
		}
		m.onClose(b.Close)
		m.Embedded = b
		cfg.Kafka.BootstrapServers = []string{b.Addr()}
	}
	m.Brokers = cfg.Kafka.BootstrapServers
	kopts, err := cfg.KafkaOpts()
	if err != nil {
		return err
	}
	kopts = append(kopts, kgo.WithLogger(kafkalog.Client(log.With().Str("component", "kafka").Logger())))

	st, err := store.Open(ctx, store.Config{
		URL: cfg.PostgresURL(), MinConns: cfg.Postgres.MinConns, MaxConns: cfg.Postgres.MaxConns,
		RetryBase: cfg.AcquireRetryDelay,
		OnRetry: func(attempt int, err error, delay time.Duration) {
			log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", delay).Msg("transient database error; retrying the transaction")
		},
	})
	if err != nil {
		return err
	}
	m.onClose(st.Close)
	if err := st.Migrate(ctx); err != nil {
		return err
	}

	pub, pubClient, err := outbox.NewKafkaPublisher(kopts, 30*time.Second, cfg.Topics.AutoCreateReplyTopics)
	if err != nil {
		return err
	}
	m.onClose(pubClient.Close)
	mets := metrics.New(metrics.Config{Pool: st.Pool})
	relay, err := outbox.New(outbox.Config{Publisher: pub, Pool: st.Pool, MaxAttempts: cfg.RelayMaxAttempts,
		Logger: log.With().Str("component", "relay").Logger(), OnPublished: mets.Published, OnParked: mets.Parked})
	if err != nil {
		return err
	}

	var verifier *auth.Verifier
	if cfg.Auth.Required {
		alog := log.With().Str("component", "auth").Logger()
		verifier, err = auth.NewVerifier(auth.Config{KeysPath: cfg.Auth.Keys, HMACKeyFile: cfg.Auth.HMACKeyFile,
			Audience: cfg.Auth.Audience, Issuer: cfg.Auth.Issuer,
			OnReload: func(keys int, err error) {
				if err != nil {
					alog.Error().Err(err).Int("keys", keys).Msg("reloading the verification keys failed; the keys read before stay in force")
					return
				}
				alog.Info().Int("keys", keys).Msg("verification keys reloaded")
			}})
		if err != nil {
			return fmt.Errorf("AUTH_REQUIRED: %w", err)
		}
		log.Info().Msg("requester authentication is required: commands without a valid token are dead-lettered")
	}

	w, err := worker.New(worker.Config{
		KafkaOpts: kopts, Group: cfg.Kafka.ConsumerGroup, Names: names, CommandsPartitions: cfg.Topics.CommandsPartitions,
		Store: st, Relay: relay, DefaultLease: cfg.DefaultLeaseDuration, RequireFencingToken: cfg.RequireFencingToken, Auth: verifier,
		MaxReplyTopics: cfg.Topics.MaxReplyTopics, CreateReplyTopics: cfg.Topics.AutoCreateReplyTopics, Instance: cfg.InstanceID,
		CleanupInterval: cfg.CleanupInterval, RequestRetention: cfg.RequestRetention, EventsRetention: cfg.LockEventsRetention,
		DeadLetterMaxBytes: cfg.DeadLetterMaxBytes,
		Logger:             log.With().Str("component", "worker").Logger(), Metrics: mets,
	})
	if err != nil {
		return err
	}
	m.onClose(w.Close)
	mets.WatchLag(w.Lag)
	if err := w.EnsureTopics(ctx); err != nil {
		// The first request to Kafka: say what to check.
		return fmt.Errorf("talking to Kafka at %v (check KAFKA_BOOTSTRAP_SERVERS, KAFKA_TLS_* and KAFKA_SASL_*): %w",
			cfg.Kafka.BootstrapServers, err)
	}

	if err := m.serveHTTP(httpapi.Config{
		Pool: st.Pool, Kafka: w.Client(), Metrics: mets, Partitions: w.Partitions, Stopping: ctx.Done(),
		Instance: cfg.InstanceID, Group: cfg.Kafka.ConsumerGroup, InspectToken: cfg.InspectToken, Logger: log.With().Str("component", "http").Logger(),
	}); err != nil {
		return err
	}

	close(m.Ready)
	log.Info().Strs("brokers", cfg.Kafka.BootstrapServers).Str("commands", names.Commands).Msg("lockworker is consuming")
	return w.Run(ctx)
}

// serveHTTP serves the health and metrics endpoints on HTTP_ADDR until
// Close, which lets requests in flight finish. It keeps serving while Run
// drains, so probes see "draining" rather than a refused connection.
func (m *Main) serveHTTP(cfg httpapi.Config) error {
	ln, err := net.Listen("tcp", m.Config.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listening on HTTP_ADDR %s: %w", m.Config.HTTPAddr, err)
	}
	srv := &http.Server{
		Handler:           httpapi.New(cfg),
		ReadHeaderTimeout: 5 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			m.Logger.Error().Err(err).Msg("HTTP server stopped")
		}
	}()
	m.HTTPAddr = ln.Addr().String()
	m.Logger.Info().Str("addr", m.HTTPAddr).Msg("serving health and metrics over HTTP")
	m.onClose(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			m.Logger.Warn().Err(err).Msg("HTTP server shutdown")
			_ = srv.Close()
		}
		<-done
	})
	return nil
}
