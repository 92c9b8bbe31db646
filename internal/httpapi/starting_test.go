package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/httpapi"
)

func TestStarting(t *testing.T) {
	step := "migrating the database"
	h := httpapi.Starting("w-1", time.Now().Add(-time.Minute), func() string { return step })
	serve := func(path string, v any) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), v), rec.Body.String())
		return rec.Code
	}

	var live httpapi.Live
	require.Equal(t, http.StatusOK, serve("/health/live", &live))
	require.True(t, live.Live)
	require.Equal(t, "w-1", live.Instance)
	require.GreaterOrEqual(t, live.Uptime, 60.0, "since the process started")

	var health httpapi.Health
	require.Equal(t, http.StatusServiceUnavailable, serve("/health", &health))
	require.Equal(t, httpapi.Health{Status: "starting", Live: true, Instance: "w-1", Uptime: health.Uptime,
		Step: "migrating the database", Partitions: []int32{}, Checks: map[string]httpapi.Check{}}, health)

	step = "checking the Kafka topics"
	for _, path := range []string{"/metrics", "/health/postgres", "/locks/a", "/sessions/s"} {
		var e struct{ Error string }
		require.Equal(t, http.StatusServiceUnavailable, serve(path, &e), path)
		require.Equal(t, "starting: checking the Kafka topics", e.Error, path)
	}
}
