package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/store"
)

// A connection the pool makes after the start, to a server that accepts it
// and never answers, ends at ConnectTimeout (the URL's connect_timeout=0 is
// none, and overrides PGCONNECT_TIMEOUT), well within the transaction's
// attempt bound and pgxpool's own 2 minutes, and is retried as a failed
// connection: the transaction commits as soon as the server answers.
func TestPoolConnectTimeoutAfterStart(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	var mu sync.Mutex
	var retries []error
	retried := make(chan struct{}, 1)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{URL: connstr.WithParam(sch.URL, "connect_timeout", "0"), MaxConns: 1, ConnectTimeout: 300 * time.Millisecond,
		AttemptTimeout: time.Minute, RetryStart: true, RetryBase: time.Millisecond, RetryMax: 20 * time.Millisecond,
		OnRetry: func(_ int, err error, _ time.Duration) {
			mu.Lock()
			retries = append(retries, err)
			mu.Unlock()
			select {
			case retried <- struct{}{}:
			default:
			}
		}})
	require.NoError(t, err)
	t.Cleanup(st.Close)
	t.Cleanup(proxy.Restore) // before the store closes

	proxy.Hang()
	st.Pool.Reset() // the next transaction connects anew
	done := make(chan error, 1)
	go func() {
		done <- st.InTx(ctx, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, `SELECT 1`)
			return err
		})
	}()
	select {
	case <-retried:
	case err := <-done:
		t.Fatalf("the transaction ended through a hung proxy: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the hung connection attempt still holds the transaction")
	}
	proxy.Restore()
	require.NoError(t, awaitDone(t, done))
	mu.Lock()
	first := retries[0]
	mu.Unlock()
	var connectErr *pgconn.ConnectError
	require.ErrorAs(t, first, &connectErr, "the connection attempt failed")
	require.ErrorIs(t, first, store.ErrTransient)
	require.ErrorIs(t, first, context.DeadlineExceeded, "the connect timeout ended it")
	require.False(t, errors.Is(first, store.ErrAttemptTimedOut), "not the attempt's bound: %v", first)
}

// The SET a new connection runs ends at its bound when the server stops
// answering after the connection opened (the pool runs it under a context
// only Close ends, so it would otherwise hold its slot until TCP gives up),
// and that is a failed connection: retried at run time and at the start.
func TestSessionSettingsBounded(t *testing.T) {
	t.Parallel()
	sch, proxy := proxiedSchema(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, sch.URL)
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
		require.True(t, store.RunTimeTransient(err), "retried at run time: %v", err)
		require.True(t, store.StartRetryable(ctx, err), "retried at the start: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the SET still waits for a server that stopped answering")
	}
}
