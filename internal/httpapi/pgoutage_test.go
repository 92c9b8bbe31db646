package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"
)

// TestPostgresOutageSaysSo: the PostgreSQL check's error leads with what
// failed, PostgreSQL timed out or unreachable, before the step that met
// it (else /health's would lead with "counting parked outbox rows"), in
// /health and /health/postgres alike.
func TestPostgresOutageSaysSo(t *testing.T) {
	e := newEnv(t, nil, hung)
	checkErrors := func() (health, postgres string) {
		var h Health
		code, body := e.get("/health", &h)
		require.Equal(t, http.StatusServiceUnavailable, code, body)
		var ph PostgresHealth
		code, body = e.get("/health/postgres", &ph)
		require.Equal(t, http.StatusServiceUnavailable, code, body)
		return h.Checks["postgres"].Error, ph.Error
	}
	e.proxy.Hang()
	health, postgres := checkErrors()
	require.Regexp(t, `^PostgreSQL timed out: counting parked outbox rows: .*deadline exceeded`, health)
	require.Regexp(t, `^PostgreSQL timed out: asking PostgreSQL whether it takes writes: .*deadline exceeded`, postgres)

	e.proxy.Cut()
	health, postgres = checkErrors()
	require.Regexp(t, "^PostgreSQL unreachable: counting parked outbox rows: ", health)
	require.Regexp(t, "^PostgreSQL unreachable: asking PostgreSQL whether it takes writes: ", postgres)
}

// TestOutageLeads: an answer of the server with a SQLSTATE, a refused
// connection's included, is told as such; the read-only check and a
// cancelled request's error are left as they are.
func TestOutageLeads(t *testing.T) {
	denied := &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for table outbox"}
	for err, want := range map[error]string{
		fmt.Errorf("counting parked outbox rows: %w", denied): "PostgreSQL answered with an error: counting parked outbox rows: ERROR: permission denied for table outbox (SQLSTATE 42501)",
		errReadOnly: errReadOnly.Error(),
		fmt.Errorf("asking: %w", context.Canceled): "asking: context canceled",
	} {
		require.EqualError(t, outage(err), want)
	}
	require.NoError(t, outage(nil))
}
