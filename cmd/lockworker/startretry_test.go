package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/connstr"
	"github.com/omninode/lockworker/internal/httpapi"
	"github.com/omninode/lockworker/internal/tcpproxy"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
)

// startRetryMsg is the log line of a retry of PostgreSQL at start.
const startRetryMsg = "transient database error while starting; retrying"

// cutPostgres is the test's schema behind a proxy that refuses every
// connection until Restore: the URL to it has a password, which the log
// must never show (trust authentication does not ask for it).
func cutPostgres(t *testing.T) (proxy *tcpproxy.Proxy, dbURL, password string) {
	t.Helper()
	dbURL = testdb.NewSchema(t).URL
	cfg, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	password = cfg.Password // the test's own, from the URL or the environment
	if password == "" {
		password = "start-retry-s3cret"
	}
	dbURL, proxy = testdb.Proxied(t, connstr.WithParam(dbURL, "password", password))
	proxy.Cut()
	return proxy, dbURL, password
}

// newLoggedMain is launch's Main, on a kfake broker, logging to logs.
func newLoggedMain(t *testing.T, dbURL string, logs *testlog.Buffer) *Main {
	_, external := externalKafka(t)
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = dbURL
	m.Config.InstanceID = "e2e"
	m.Config.HTTPAddr = "127.0.0.1:0"
	external(&m.Config)
	return m
}

// awaitStartRetries waits until the replica, serving HTTP, says on /health
// that it is at step and has logged retries of it (msg); it fails the test
// at once if Run returns.
func awaitStartRetries(t *testing.T, m *Main, run *running, logs *testlog.Buffer, step, msg string) {
	t.Helper()
	run.await(t, m.Serving)
	deadline := time.After(runWait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var h httpapi.Health
		code, _ := get(t, m, "/health", &h)
		require.Equal(t, http.StatusServiceUnavailable, code, "while starting")
		require.Equal(t, "starting", h.Status)
		if h.Step == step && strings.Count(logs.String(), msg) >= 2 {
			return
		}
		select {
		case <-run.done:
			t.Fatalf("Run returned while %s was retried: %v", step, run.err)
		case <-deadline:
			t.Fatalf("no retries of %s in %s; /health step %q; log:\n%s", step, runWait, h.Step, testlog.LastLines(logs.String(), 10))
		case <-tick.C:
		}
	}
}

// A replica started while PostgreSQL refuses connections (a failover)
// does not exit: /health says it is connecting to PostgreSQL, each retry is
// logged at warn with its error (never the password), and once PostgreSQL
// is back it migrates and becomes ready.
func TestStartWaitsForPostgres(t *testing.T) {
	proxy, dbURL, password := cutPostgres(t)
	logs := &testlog.Buffer{}
	m := newLoggedMain(t, dbURL, logs)
	run, _ := runMain(t, m)
	awaitStartRetries(t, m, run, logs, "connecting to PostgreSQL", startRetryMsg)

	line := logLine(t, logs.String(), startRetryMsg)
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, `"step":"connecting to PostgreSQL"`)
	assert.Contains(t, line, "connecting to PostgreSQL at 127.0.0.1")
	assert.Contains(t, line, `"retry_in":`)

	proxy.Restore()
	run.await(t, m.Ready)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code, _ := get(c, m, "/health", nil)
		assert.Equal(c, http.StatusOK, code)
	}, runWait, 50*time.Millisecond)
	require.NotContains(t, logs.String(), password)
}

// A signal while the start retries PostgreSQL stops the replica with exit
// code 0, logged at warn with the step and the last error.
func TestStopWhileWaitingForPostgres(t *testing.T) {
	_, dbURL, password := cutPostgres(t)
	logs := &testlog.Buffer{}
	m := newLoggedMain(t, dbURL, logs)
	ctx, cancel := context.WithCancel(t.Context())
	run := &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	t.Cleanup(m.Close)
	awaitStartRetries(t, m, run, logs, "connecting to PostgreSQL", startRetryMsg)

	line := stopWhileStarting(t, m, run, cancel, logs, "connecting to PostgreSQL")
	assert.Contains(t, line, "transient database error")
	require.NotContains(t, logs.String(), password)
}

// What no retry cures stops the start at once (exit 1), without a retry:
// here a role that may not log in.
func TestStartRefusedByPostgresExitsAtOnce(t *testing.T) {
	sch := testdb.NewSchema(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, testdb.URL())
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close(context.Background()) })
	role := fmt.Sprintf("lwtest_nologin_%08x", rand.Uint32())
	if _, err := admin.Exec(ctx, "CREATE ROLE "+role+" NOLOGIN"); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Fatalf("creating a role: %v", err)
		}
		testdb.SkipMissing(t, "the test user may not create roles (a superuser, or CREATEROLE): %v", err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role) })
	logs := &testlog.Buffer{}
	m := newLoggedMain(t, connstr.WithParam(sch.URL, "user", role), logs)
	t.Cleanup(m.Close)
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(runWait):
		t.Fatalf("Run did not fail in %s", runWait)
	}
	require.ErrorIs(t, err, store.ErrAccessDenied)
	require.NotErrorIs(t, err, store.ErrTransient)
	require.Equal(t, 1, m.exitCode(err, false))
	require.NotContains(t, logs.String(), startRetryMsg)
}

// stopWhileStarting signals (cancel) a replica that retries step of its
// start, and returns the line saying it stopped: Run ends promptly with
// exit code 0, logged at warn with the step.
func stopWhileStarting(t *testing.T, m *Main, run *running, cancel func(), logs *testlog.Buffer, step string) string {
	t.Helper()
	cancel() // the signal
	select {
	case <-run.done:
	case <-time.After(runWait):
		t.Fatalf("Run still retrying %s after its context ended", runWait)
	}
	require.ErrorIs(t, run.err, context.Canceled)
	require.Equal(t, 0, m.exitCode(run.err, true))
	line := logLine(t, logs.String(), "lockworker stopped while starting")
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, `"step":"`+step+`"`)
	return line
}
