package httpapi

import (
	"context"
	"net/http"

	"github.com/omninode/lockworker/metrics"
)

// LocksHealth is /health/locks: the whole database's locks and outbox.
type LocksHealth struct {
	Status string `json:"status"`
	// LockStats is absent when they could not be read.
	*metrics.LockStats
	Error string `json:"error,omitempty"`
}

func (s *server) locksHealth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
	defer cancel()
	stats, err := metrics.ReadLockStats(ctx, s.cfg.Pool)
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, LocksHealth{Status: statusUnavailable, Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, LocksHealth{Status: statusOK, LockStats: &stats})
}

// summary is /health/metrics: the original node's metrics summary.
func (s *server) summary(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.cfg.Metrics.Summary())
}
