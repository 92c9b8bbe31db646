package store_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/store"
)

// A connection the pool makes after the start, to a server that accepts it
// and never answers, ends at ConnectTimeout: its pool slot is free again
// then, not after pgxpool's 2 minutes, and the pool connects as soon as the
// server answers.
func TestPoolConnectTimeoutAfterStart(t *testing.T) {
	t.Parallel()
	if os.Getenv("PGCONNECT_TIMEOUT") != "" {
		t.Skip("PGCONNECT_TIMEOUT sets a connect_timeout")
	}
	_, u, proxy := proxiedSchema(t)
	q := u.Query()
	q.Del("connect_timeout")
	u.RawQuery = q.Encode()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: u.String(), MaxConns: 1, ConnectTimeout: 300 * time.Millisecond})
	require.NoError(t, err)
	t.Cleanup(st.Close)

	proxy.Hang()
	st.Pool.Reset() // the next Acquire connects anew
	actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = st.Pool.Acquire(actx)
	cancel()
	require.Error(t, err)
	// The connection attempt goes on in the background after Acquire gave
	// up, holding the pool's one slot until it ends.
	require.Eventually(t, func() bool {
		s := st.Pool.Stat()
		return s.ConstructingConns() == 0 && s.TotalConns() == 0
	}, 20*time.Second, 10*time.Millisecond, "the hung connection attempt still holds its slot")

	proxy.Restore()
	conn, err := st.Pool.Acquire(ctx)
	require.NoError(t, err)
	conn.Release()
}

// The SET a new connection runs ends at its bound when the server stops
// answering after the connection opened: the pool runs it under a context
// only Close ends, so it would otherwise hold its slot until TCP gives up.
func TestSessionSettingsBounded(t *testing.T) {
	t.Parallel()
	_, u, proxy := proxiedSchema(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close(context.WithoutCancel(ctx)) })

	set := store.SessionSettings(5*time.Second, 300*time.Millisecond)
	require.NoError(t, set(ctx, conn), "the SET, answered")

	proxy.Hang()
	done := make(chan error, 1)
	go func() { done <- set(ctx, conn) }()
	select {
	case err := <-done:
		require.Error(t, err)
	case <-time.After(20 * time.Second):
		t.Fatal("the SET still waits for a server that stopped answering")
	}
}
