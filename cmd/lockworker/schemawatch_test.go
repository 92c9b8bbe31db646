package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
	"github.com/omninode/lockworker/topics"
)

// launchOn runs the real wiring on sch with its embedded broker on
// kafkaAddr and HTTP on httpAddr, checking the schema every 100 ms, logging
// to logs, and waits until it consumes; the running's done is closed when
// Run returns.
func launchOn(t *testing.T, sch testdb.Schema, kafkaAddr, httpAddr string, logs *testlog.Buffer) (*Main, *running) {
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.Config.Postgres.URL = sch.URL
	m.Config.InstanceID = "e2e"
	m.Config.HTTPAddr = httpAddr
	m.Config.Embedded.Addr, m.Config.Embedded.Dir = kafkaAddr, t.TempDir()
	m.SchemaCheckInterval = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	run := &running{done: make(chan struct{})}
	go func() { run.err = m.Run(ctx); close(run.done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-run.done:
		case <-time.After(runWait):
			t.Errorf("lockworker did not drain in %s", runWait)
		}
		m.Close()
	})
	run.await(t, m.Ready)
	return m, run
}

// The running replica says which build it is: its start's line and
// lockworker_build_info.
func TestStartSaysItsBuild(t *testing.T) {
	logs := &testlog.Buffer{}
	m, _ := launchOn(t, testdb.NewSchema(t), "127.0.0.1:18201", "127.0.0.1:18202", logs)
	last := store.LatestVersion()
	resp, err := http.Get("http://" + m.HTTPAddr + "/metrics")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), fmt.Sprintf("\nlockworker_build_info{revision=%q,schema_version=\"%d\"} 1\n", revision(), last))
	require.Contains(t, logs.String(), fmt.Sprintf(`"revision":%q,"binary_version":%d`, revision(), last), "the start's line")
}

// A replica that consumes stops, exiting 1 with the start's error, once a
// migration applied meanwhile (here by hand, as a newer binary's would:
// the version and oldest_reader in one transaction) no longer allows its
// version; checks that fail meanwhile (its table locked past the check's
// bound), several in a row, stop nothing.
func TestStopsOnceTheSchemaNoLongerAllowsIt(t *testing.T) {
	ctx := context.Background()
	sch := testdb.NewSchema(t)
	logs := &testlog.Buffer{}
	addr := "127.0.0.1:18203"
	// Registered first, so it runs after launchOn's cleanup has seen Run
	// return.
	failed := make(chan int, 1)
	schemaCheckFailed = func(n int) {
		select {
		case <-failed: // a count not read yet is stale
		default:
		}
		failed <- n
	}
	t.Cleanup(func() { schemaCheckFailed = nil })
	_, run := launchOn(t, sch, addr, "127.0.0.1:18204", logs)
	last := store.LatestVersion()

	db := sch.Open(t, store.Config{})
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck // the pool's Close waits for its connection
	_, err = tx.Exec(ctx, `LOCK TABLE `+store.VersionTable+` IN ACCESS EXCLUSIVE MODE`)
	require.NoError(t, err)
	const failures = 3
	for n := 0; n < failures; {
		select {
		case n = <-failed:
		case <-run.done:
			t.Fatalf("lockworker stopped after failed checks (%d in a row): %v", n, run.err)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d checks failed in 10 s, want %d", n, failures)
		}
	}
	require.Contains(t, logs.String(), "checking that the database schema still allows this binary's version failed")
	require.NoError(t, tx.Rollback(ctx))
	worksAgain := func() bool {
		return strings.Contains(logs.String(), "checking the database schema's version works again")
	}
	require.Eventually(t, worksAgain, 10*time.Second, 20*time.Millisecond)
	select {
	case <-run.done:
		t.Fatalf("lockworker stopped after checks that failed: %v", run.err)
	default:
	}
	c := newClient(t, addr, "locks.replies.compat")
	c.send(topics.Command{RequestID: "c1", Operation: "acquire", LockName: "job", OwnerID: "a", LeaseDuration: 300})
	c.await("c1", topics.TypeAcquired)

	tx, err = db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer tx.Rollback(ctx) //nolint:errcheck
	_, err = tx.Exec(ctx, `UPDATE `+store.VersionTable+` SET version = $1`, last+1)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, `UPDATE `+store.CompatTable+` SET oldest_reader = $1`, last+1)
	require.NoError(t, err)
	require.NoError(t, tx.Commit(ctx))
	select {
	case <-run.done:
	case <-time.After(runWait):
		t.Fatalf("lockworker still runs %s after the schema stopped allowing its version", runWait)
	}
	require.ErrorIs(t, run.err, store.ErrSchemaNewer)
	// The start's error, word for word.
	startErr := db.Migrate(ctx)
	require.ErrorIs(t, startErr, store.ErrSchemaNewer)
	require.EqualError(t, run.err, startErr.Error())
	require.Equal(t, 1, exitStatus(run.err, false))
}

// watchSchema returns the check's answer that the schema no longer allows
// this binary, and nothing else: a failed check is made again.
func TestWatchSchemaRetriesFailedChecks(t *testing.T) {
	newer := &store.SchemaNewerError{Version: 3, Latest: 2, OldestReader: 3}
	answers := []error{errors.New("connection refused"), context.DeadlineExceeded, nil, newer}
	checks := 0
	logs := &testlog.Buffer{}
	err := watchSchema(context.Background(), func(context.Context) error {
		checks++
		return answers[checks-1]
	}, time.Millisecond, zerolog.New(logs))
	require.Same(t, newer, err)
	require.Equal(t, len(answers), checks)
	assert.Contains(t, logs.String(), "connection refused")
	assert.Contains(t, logs.String(), "works again")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.NoError(t, watchSchema(ctx, func(context.Context) error { return context.Canceled }, time.Millisecond, zerolog.Nop()), "stopped")
}
