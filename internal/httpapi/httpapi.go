// Package httpapi is lockworker's HTTP side (docs/design.md "HTTP
// endpoints"): health checks, Prometheus metrics, the original node's
// metrics summary and lock inspection. Every answer is JSON with stable snake_case fields, except
// /metrics (Prometheus text). Every check runs under Config.CheckTimeout, so
// a hung database or broker makes a health check fail fast, never hang.
package httpapi

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/worker"
)

// Config is what the endpoints look at. Fields without a default are
// required.
type Config struct {
	// Pool is the worker's own pool, so the checks fail when the worker
	// cannot reach PostgreSQL (and wait like the worker when it is full).
	Pool *pgxpool.Pool
	// DBSlots bound the endpoints' reads of Pool. Give Metrics the same
	// (metrics.Config.Hold: DBSlots.Hold), so that /metrics's reads count
	// in the bound too. Default: NewDBSlots(Pool's MaxConns), which
	// /metrics's reads then do not take.
	DBSlots *DBSlots
	// Kafka is the worker's Kafka client.
	Kafka *kgo.Client
	// Metrics serves /metrics and /health/metrics.
	Metrics *metrics.Metrics
	// Partitions lists the commands partitions this process owns. Default:
	// none shown.
	Partitions func() []int32
	// Stopping, once closed, makes /health answer 503 "draining": the
	// process is finishing its batches and leaving the group. Default: never.
	Stopping <-chan struct{}
	// Withdrawn, when it says so, makes /health answer 503 "withdrawn":
	// the replica gave its partitions up because PostgreSQL does not
	// answer it (worker.Worker.Withdrawn), though the pool's check may
	// answer before it takes partitions again. Default: never.
	Withdrawn func() bool
	// Vacuum, when set, is the vacuum loop's state for /health/locks
	// (worker.Vacuumer.Status).
	Vacuum func() worker.VacuumStatus
	// Instance and Group name this process in /health and /health/kafka.
	Instance, Group string
	// Started is when the process started, for uptime_seconds. Default:
	// when New was called.
	Started time.Time
	// CheckTimeout bounds each check and database read. Default 2 s.
	CheckTimeout time.Duration
	// InspectToken, when set, is the bearer token /locks/*, /sessions/*
	// and /health/locks require; only callers presenting it see
	// owner_metadata and waiters' request_ids. Default empty: those
	// endpoints are open and show neither.
	InspectToken string
	// Logger gets errors of /metrics collection. Default: none.
	Logger zerolog.Logger
}

type server struct {
	cfg   Config
	db    *DBSlots
	kafka *sharedPing
}

// maxScrapes is how many /metrics requests are served at once.
const maxScrapes = 4

// New returns the handler of every endpoint.
func New(cfg Config) http.Handler {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.Partitions == nil {
		cfg.Partitions = func() []int32 { return nil }
	}
	if cfg.Started.IsZero() {
		cfg.Started = time.Now()
	}
	if cfg.DBSlots == nil {
		cfg.DBSlots = NewDBSlots(cfg.Pool.Config().MaxConns)
	}
	s := &server{cfg: cfg, db: cfg.DBSlots, kafka: &sharedPing{ping: pingBrokers(cfg.Kafka), timeout: pingTimeout(cfg.CheckTimeout)}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", s.health)
	mux.HandleFunc("GET /health/live", s.live)
	mux.HandleFunc("GET /health/postgres", s.postgresHealth)
	mux.HandleFunc("GET /health/kafka", s.kafkaHealth)
	mux.HandleFunc("GET /health/locks", s.private(s.locksHealth))
	mux.HandleFunc("GET /health/metrics", s.summary)
	// {name...}: lock names may contain "/" (orders/42). Without the
	// patterns of the bare paths, which answer as /locks/ and /sessions/
	// (no name: 400), ServeMux would redirect them there (307, text/html).
	mux.HandleFunc("GET /locks/{name...}", s.private(s.lock))
	mux.HandleFunc("GET /locks", s.private(s.lock))
	mux.HandleFunc("GET /sessions/{id...}", s.private(s.session))
	mux.HandleFunc("GET /sessions", s.private(s.session))
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{
		// A database that does not answer drops its gauges from the scrape;
		// the rest is still served.
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{cfg.Logger},
		Timeout:       2 * cfg.CheckTimeout,
		// A scrape reads PostgreSQL: the consumer lag's offsets, and the
		// database gauges when their last read is old (internal/metrics'
		// statsMaxAge; statsFailedAge after a failed one). Concurrent scrapes (an HA pair of Prometheus
		// servers, a person's curl) share those reads (internal/metrics
		// singleflights them), so they hold two connections at most
		// whatever their number (DBSlots bound them with the rest); the
		// bound here only stops a flood, past which a scrape gets 503.
		MaxRequestsInFlight: maxScrapes,
	}))
	// Every other request is answered in JSON too, as while starting, not
	// with Go's plain-text 404 or 405.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			if _, pattern := mux.Handler(&http.Request{Method: http.MethodGet, URL: r.URL, Host: r.Host}); pattern != "/" {
				w.Header().Set("Allow", "GET, HEAD")
				writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed: GET and HEAD only")
				return
			}
		}
		writeError(w, http.StatusNotFound, "no such endpoint")
	})
	return mux
}

// errorBody is every error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// millis is a duration in milliseconds, to microseconds, as duration_ms.
func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

type promLogger struct{ log zerolog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn().Msgf("metrics: %v", v) }
