package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/omninode/lockworker/outbox"
)

// Check is the result of one dependency check.
type Check struct {
	// Status is ok or unavailable.
	Status    string  `json:"status"`
	LatencyMS float64 `json:"latency_ms"`
	Error     string  `json:"error,omitempty"`
}

// Health is /health: liveness (the process answers) and readiness (its
// dependencies answer and it is not draining).
type Health struct {
	// Status is ok, degraded (ready, but parked outbox rows wait for an
	// operator), unavailable (a check failed), draining, or starting (see
	// Starting).
	Status     string           `json:"status"`
	Live       bool             `json:"live"`
	Ready      bool             `json:"ready"`
	Instance   string           `json:"instance,omitempty"`
	Uptime     float64          `json:"uptime_seconds"`
	Partitions []int32          `json:"partitions"`
	Checks     map[string]Check `json:"checks"`
	// Step is what a starting process is doing; absent once it serves.
	Step string `json:"step,omitempty"`
	// OutboxParked counts the parked outbox rows of the whole database up
	// to outbox.ParkedCap (1000: that many or more; the outbox_parked
	// gauge counts them all); absent when PostgreSQL did not answer.
	OutboxParked *int64 `json:"outbox_parked,omitempty"`
	// EmbeddedKafka, true, says the process runs on the embedded
	// development broker (KAFKA_BOOTSTRAP_SERVERS unset), its own, which
	// no other replica shares: a deployment that forgot or misspelt
	// KAFKA_BOOTSTRAP_SERVERS is ready, and no command reaches it. Absent
	// otherwise (WithEmbeddedKafka).
	EmbeddedKafka bool `json:"embedded_kafka,omitempty"`
}

// WithEmbeddedKafka is h, New's or Starting's handler, for a process on
// the embedded development broker: its /health says so
// (Health.EmbeddedKafka).
func WithEmbeddedKafka(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), embeddedKafkaKey{}, true)))
	})
}

// embeddedKafkaKey marks a request WithEmbeddedKafka serves.
type embeddedKafkaKey struct{}

// embeddedKafka reports whether WithEmbeddedKafka serves r.
func embeddedKafka(r *http.Request) bool { return r.Context().Value(embeddedKafkaKey{}) != nil }

const (
	statusOK          = "ok"
	statusDegraded    = "degraded"
	statusUnavailable = "unavailable"
	statusDraining    = "draining"
	statusWithdrawn   = "withdrawn"
)

// health runs the checks concurrently, so it answers within one
// CheckTimeout: 200 when ready (ok or degraded), 503 otherwise.
func (s *server) health(w http.ResponseWriter, r *http.Request) {
	var parked *int64
	checks := map[string]func(context.Context) error{
		// Counting the parked rows is the PostgreSQL check's read: a read
		// bounded whatever the backlog (outbox.Parked), well within the
		// check's timeout. Then whether the server takes writes.
		"postgres": func(ctx context.Context) error {
			return s.withProbeDB(ctx, func(ctx context.Context) error {
				n, err := outbox.Parked(ctx, s.cfg.Pool)
				if err != nil {
					return outage(err)
				}
				parked = &n
				return outage(writable(ctx, s.cfg.Pool))
			})
		},
		"kafka": s.kafka.Ping,
	}
	h := Health{Live: true, Ready: true, Status: statusOK, Instance: s.cfg.Instance,
		Uptime: time.Since(s.cfg.Started).Seconds(), Partitions: s.partitions(), Checks: map[string]Check{},
		EmbeddedKafka: embeddedKafka(r)}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, check := range checks {
		wg.Go(func() {
			c := s.run(r.Context(), check)
			mu.Lock()
			defer mu.Unlock()
			h.Checks[name] = c
			if c.Status != statusOK {
				h.Ready, h.Status = false, statusUnavailable
			}
		})
	}
	wg.Wait()
	h.OutboxParked = parked
	if h.Status == statusOK && parked != nil && *parked > 0 {
		// Still ready: the service works, but events are held back
		// until an operator looks (README runbook).
		h.Status = statusDegraded
	}
	switch {
	case s.stopping():
		h.Ready, h.Status = false, statusDraining
	case s.cfg.Withdrawn != nil && s.cfg.Withdrawn():
		h.Ready, h.Status = false, statusWithdrawn
	}
	code := http.StatusOK
	if !h.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, h)
}

// Live is /health/live.
type Live struct {
	Status   string  `json:"status"`
	Live     bool    `json:"live"`
	Instance string  `json:"instance,omitempty"`
	Uptime   float64 `json:"uptime_seconds"`
}

// live answers 200 while the process serves HTTP, whatever its
// dependencies say: a liveness probe on it restarts a process that stopped
// answering, not one waiting out a PostgreSQL or Kafka outage (which
// /health reports as not ready). It does not see inside the worker: a
// transaction's attempts are bounded instead (store.Config.AttemptTimeout).
func (s *server) live(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, Live{Status: statusOK, Live: true, Instance: s.cfg.Instance, Uptime: time.Since(s.cfg.Started).Seconds()})
}

// PostgresHealth is /health/postgres.
type PostgresHealth struct {
	Check
	Pool PoolStats `json:"pool"`
}

// PoolStats are the worker's connections.
type PoolStats struct {
	TotalConns    int32 `json:"total_conns"`
	IdleConns     int32 `json:"idle_conns"`
	AcquiredConns int32 `json:"acquired_conns"`
	MaxConns      int32 `json:"max_conns"`
}

func (s *server) postgresHealth(w http.ResponseWriter, r *http.Request) {
	st := s.cfg.Pool.Stat()
	h := PostgresHealth{Check: s.run(r.Context(), s.pingPostgres), Pool: PoolStats{
		TotalConns: st.TotalConns(), IdleConns: st.IdleConns(), AcquiredConns: st.AcquiredConns(), MaxConns: st.MaxConns(),
	}}
	writeJSON(w, checkCode(h.Check), h)
}

// KafkaHealth is /health/kafka.
type KafkaHealth struct {
	Check
	Group string `json:"group"`
	// Partitions are the commands partitions this process owns.
	Partitions []int32 `json:"partitions"`
}

func (s *server) kafkaHealth(w http.ResponseWriter, r *http.Request) {
	h := KafkaHealth{Check: s.run(r.Context(), s.kafka.Ping), Group: s.cfg.Group, Partitions: s.partitions()}
	writeJSON(w, checkCode(h.Check), h)
}

// pingPostgres takes a connection from the worker's pool and runs a query
// on it: a pool whose server is gone answers with an error at once, a hung
// server at the timeout, a read-only one with errReadOnly.
func (s *server) pingPostgres(ctx context.Context) error {
	return s.withDB(ctx, func(ctx context.Context) error { return outage(writable(ctx, s.cfg.Pool)) })
}

// outage leads an error of a PostgreSQL check's round trip with what failed
// as an operator sees it: "PostgreSQL timed out" (no answer within the
// check's timeout), "PostgreSQL answered with an error" (one with a
// SQLSTATE, a refused connection's included), else "PostgreSQL
// unreachable" (no connection, or it broke). The step that met it
// ("counting parked outbox rows") would otherwise lead every outage.
// errReadOnly says it all already; a cancelled request has nobody to tell.
func outage(err error) error {
	switch {
	case err == nil, errors.Is(err, errReadOnly), errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("PostgreSQL timed out: %w", err)
	case errors.As(err, new(*pgconn.PgError)):
		return fmt.Errorf("PostgreSQL answered with an error: %w", err)
	}
	return fmt.Errorf("PostgreSQL unreachable: %w", err)
}

// writable fails with errReadOnly when the pool's server refuses writes: a
// standby, or transaction_read_only on (default_transaction_read_only set
// for the server, database or role, as a failover may fence an old
// primary). Its reads answer, but every transaction of the worker fails
// with SQLSTATE 25006 and is retried without end (store's readOnlyReset
// connects anew, to the same server), so it is not ready.
func writable(ctx context.Context, pool *pgxpool.Pool) error {
	var ro bool
	err := pool.QueryRow(ctx, `SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::bool`).Scan(&ro)
	if err != nil {
		return fmt.Errorf("asking PostgreSQL whether it takes writes: %w", err)
	}
	if ro {
		return errReadOnly
	}
	return nil
}

// errReadOnly is the PostgreSQL check's error on a read-only server.
var errReadOnly = errors.New("PostgreSQL answers read-only (a standby, or default_transaction_read_only on): every write fails with SQLSTATE 25006")

func (s *server) run(ctx context.Context, check func(context.Context) error) Check {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CheckTimeout)
	defer cancel()
	start := time.Now()
	err := check(ctx)
	c := Check{Status: statusOK, LatencyMS: millis(time.Since(start))}
	if err != nil {
		c.Status, c.Error = statusUnavailable, err.Error()
	}
	return c
}

func checkCode(c Check) int {
	if c.Status != statusOK {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

func (s *server) partitions() []int32 {
	p := s.cfg.Partitions()
	if p == nil {
		p = []int32{} // [] rather than null: the field is always a list
	}
	return p
}

func (s *server) stopping() bool {
	select {
	case <-s.cfg.Stopping:
		return true
	default:
		return false
	}
}
