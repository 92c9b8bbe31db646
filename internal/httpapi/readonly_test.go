package httpapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/store"
)

// TestHealthReadOnlyServer: a server whose reads answer but which refuses
// every write (here default_transaction_read_only for the worker's
// connections; a standby alike) is not ready: /health and
// /health/postgres answer 503, the PostgreSQL check saying read-only.
func TestHealthReadOnlyServer(t *testing.T) {
	sch := testdb.NewSchema(t)
	require.NoError(t, sch.Open(t, store.Config{}).Migrate(context.Background()))
	sch.URL = connstr.WithParam(sch.URL, "default_transaction_read_only", "on")
	ro := sch.Open(t, store.Config{MaxConns: 4})
	e := newEnv(t, nil, func(c *Config) { c.Pool = ro.Pool })

	var h Health
	code, body := e.get("/health", &h)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Equal(t, "unavailable", h.Status)
	require.False(t, h.Ready)
	require.Equal(t, "unavailable", h.Checks["postgres"].Status)
	require.Equal(t, errReadOnly.Error(), h.Checks["postgres"].Error)
	require.Equal(t, "ok", h.Checks["kafka"].Status)
	require.NotNil(t, h.OutboxParked, "its reads answer")

	var ph PostgresHealth
	code, body = e.get("/health/postgres", &ph)
	require.Equal(t, http.StatusServiceUnavailable, code, body)
	require.Equal(t, errReadOnly.Error(), ph.Error)
}
