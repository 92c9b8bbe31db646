package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/topics"
)

// TestSession: an open session with the locks it holds and the acquire it
// waits with; expired once past expires_at; 404 once closed or never
// opened, 400 for an id the contract refuses, 401 without the INSPECT_TOKEN.
func TestSession(t *testing.T) {
	e := newEnv(t, nil, func(c *Config) { c.InspectToken = "inspect-secret" })
	e.token = "inspect-secret"
	const id = "sess/1"
	e.apply(
		topics.Command{RequestID: "s", Operation: topics.OpSessionOpen, SessionID: id, OwnerID: "worker-7", TTL: 20},
		topics.Command{RequestID: "r1", Operation: topics.OpAcquire, Namespace: "billing", LockName: "orders/42", OwnerID: "worker-7", SessionID: id},
		topics.Command{RequestID: "r2", Operation: topics.OpAcquire, LockName: "report", OwnerID: "worker-7", SessionID: id, Mode: topics.ModeShared},
		topics.Command{RequestID: "r3", Operation: topics.OpAcquire, LockName: "busy", OwnerID: "other"},
		topics.Command{RequestID: "r4", Operation: topics.OpAcquire, LockName: "busy", OwnerID: "worker-7", SessionID: id, WaitTimeout: 60},
	)
	var v SessionView
	code, body := e.get("/sessions/"+id, &v)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, id, v.SessionID)
	require.Equal(t, "worker-7", v.OwnerID)
	var generation int64
	require.NoError(t, e.st.Pool.QueryRow(context.Background(), `SELECT generation FROM sessions WHERE id = $1`, id).Scan(&generation))
	require.Positive(t, generation)
	require.Equal(t, generation, v.Generation, "the life of the session id")
	require.Equal(t, 20.0, v.TTL)
	require.Equal(t, SessionOpen, v.Status)
	require.InDelta(t, 20, v.ExpiresInSeconds, 5)
	require.Equal(t, 2, v.HoldingCount)
	require.Equal(t, []string{" report shared", "billing orders/42 exclusive"}, // by namespace, then name
		[]string{v.Holding[0].Namespace + " " + v.Holding[0].LockName + " " + v.Holding[0].Mode, v.Holding[1].Namespace + " " + v.Holding[1].LockName + " " + v.Holding[1].Mode})
	require.NotNil(t, v.Holding[1].FencingToken)
	require.Equal(t, 1, v.WaitingCount)
	require.Equal(t, "busy", v.Waiting[0].LockName)
	require.Nil(t, v.Waiting[0].FencingToken)
	for _, field := range []string{`"expires_at":`, `"opened_at":`, `"checked_at":`, `"source_partition":`} {
		require.Contains(t, body, field)
	}

	_, err := e.st.Pool.Exec(context.Background(), `UPDATE sessions SET expires_at = clock_timestamp() - interval '2 seconds'`)
	require.NoError(t, err)
	v = SessionView{}
	code, body = e.get("/sessions/"+id, &v)
	require.Equal(t, http.StatusOK, code, body)
	require.Equal(t, SessionExpired, v.Status)
	require.Less(t, v.ExpiresInSeconds, -1.0)

	e.apply(topics.Command{RequestID: "c", Operation: topics.OpSessionClose, SessionID: id, OwnerID: "worker-7"})
	code, body = e.get("/sessions/"+id, nil)
	require.Equal(t, http.StatusNotFound, code, body)
	require.Contains(t, body, "is not open")
	code, _ = e.get("/sessions/never", nil)
	require.Equal(t, http.StatusNotFound, code)

	var eb errorBody
	code, body = e.get("/sessions/"+strings.Repeat("s", topics.MaxSessionIDBytes+1), &eb)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, eb.Error, "session_id is 129 bytes")
	code, body = e.get("/sessions/", &eb)
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Equal(t, "a session id is required: GET /sessions/{id}", eb.Error)
	e.token = ""
	code, _ = e.get("/sessions/never", nil)
	require.Equal(t, http.StatusUnauthorized, code)
}
