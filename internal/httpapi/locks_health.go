package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/omninode/lockworker/internal/metrics"
	"github.com/omninode/lockworker/worker"
)

// LocksHealth is /health/locks: the whole database's locks and outbox, as
// the database gauges last read them (metrics.Metrics.LockStats).
type LocksHealth struct {
	Status string `json:"status"`
	// LockStats is absent when they could not be read. Its counted_at
	// says when they were read.
	*metrics.LockStats
	// AgeSeconds is how old they were when the answer was made (from
	// counted_at, to the millisecond): up to 10 s, the cache's age.
	AgeSeconds *float64 `json:"age_seconds,omitempty"`
	Error      string   `json:"error,omitempty"`
	// Vacuum is what the worker's vacuum loop saw and did (README "Table
	// bloat"); absent when no loop was wired in.
	Vacuum *worker.VacuumStatus `json:"vacuum,omitempty"`
}

func (s *server) locksHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
	defer cancel()
	var vacuum *worker.VacuumStatus
	if s.cfg.Vacuum != nil {
		v := s.cfg.Vacuum()
		vacuum = &v
	}
	// The scrapes' read, cached and shared: the counts scan whole tables,
	// and the port is open to anyone.
	stats, err := s.cfg.Metrics.LockStats(ctx)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, LocksHealth{Status: statusUnavailable, Error: err.Error(), Vacuum: vacuum})
		return
	}
	age := max(0, stats.Age().Round(time.Millisecond).Seconds())
	writeJSON(w, http.StatusOK, LocksHealth{Status: statusOK, LockStats: &stats, AgeSeconds: &age, Vacuum: vacuum})
}

// summary is /health/metrics: the original node's metrics summary.
func (s *server) summary(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Metrics.Summary())
}
