package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/omninode/lockworker/internal/chaos"
	"github.com/omninode/lockworker/internal/childproc"
	"github.com/omninode/lockworker/internal/kafkatest"
	"github.com/omninode/lockworker/internal/testdb"
	"github.com/omninode/lockworker/internal/testlog"
	"github.com/omninode/lockworker/store"
)

// TestSignals: the built binary exits 0 on SIGTERM, whether it comes while
// it starts (a pod deleted while Kafka does not answer) or once it serves,
// after the drain; a second signal during the drain exits 1 at once (a
// SIGTERM right after the first is its copy: TestSIGTERMPairs), and a
// closed log pipe is no reason to die before the drain.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs lockworker")
	}
	bins, err := chaos.Build(context.Background(), t.TempDir(), "lockworker")
	require.NoError(t, err)
	url := testdb.NewSchema(t).URL

	// start runs lockworker on kafka, killed at the test's end, and returns
	// its log. chaos.NewReplica pins LOG_LEVEL=info; these pin what the
	// assertions need besides, whatever the environment says: JSON lines,
	// and the classic protocol, whose LeaveGroup "second signal" holds.
	start := func(t *testing.T, kafka *kfake.Cluster, env ...string) (*chaos.Replica, *testlog.Buffer) {
		logs := &testlog.Buffer{}
		r := chaos.NewReplica("w0", bins[0], append([]string{"DATABASE_URL=" + url, "KAFKA_BOOTSTRAP_SERVERS=" + kafka.ListenAddrs()[0],
			"HTTP_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "KAFKA_GROUP_PROTOCOL=classic"}, env...), logs)
		require.NoError(t, r.Start())
		t.Cleanup(func() {
			_ = r.Kill()
			if t.Failed() {
				t.Logf("lockworker's output:\n%s", logs)
			}
		})
		return r, logs
	}

	t.Run("while starting", func(t *testing.T) {
		// Kafka never answers: Run waits for its topics until it is stopped.
		// (A refused connection is waited for too, but retried, so its stop
		// is logged at warn with the last error: TestStopWhileWaitingForKafka.)
		kafka, _ := externalKafka(t)
		held, release := kafkatest.HoldFirst(kafka, kmsg.CreateTopics)
		t.Cleanup(release) // before the broker closes
		r, logs := start(t, kafka)
		awaitRequest(t, r, held, "asked for its topics")
		require.NoError(t, r.Term(runWait), "exit 0")
		line := logLine(t, logs.String(), "lockworker stopped while starting")
		assert.Contains(t, line, `"level":"info"`, "Kafka's wait, cut short, is no failure to report")
		assert.Contains(t, line, `"step":"checking the Kafka topics"`)
		assert.NotContains(t, logs.String(), `"level":"error"`)
	})

	t.Run("after the drain", func(t *testing.T) {
		kafka, _ := externalKafka(t)
		joined, left := sent(kafka, kmsg.SyncGroup), sent(kafka, kmsg.LeaveGroup)
		r, logs := start(t, kafka)
		awaitRequest(t, r, joined, "joined the group")
		require.NoError(t, r.Term(runWait), "exit 0")
		select { // the drain's last step
		case <-left:
		default:
			t.Fatal("lockworker exited without leaving the group")
		}
		assert.NotContains(t, logs.String(), "lockworker stopped while starting")
		assert.NotContains(t, logs.String(), `"level":"error"`)
		assert.Contains(t, logLine(t, logs.String(), "lockworker stopped: drained"), `"level":"info"`, "a clean stop's last line")
	})

	t.Run("the clean stop's line is the last", func(t *testing.T) {
		// A static member's Close logs its leave, after the drain.
		kafka, _ := externalKafka(t)
		joined := sent(kafka, kmsg.SyncGroup)
		r, logs := start(t, kafka, "KAFKA_STATIC_MEMBERSHIP=true")
		awaitRequest(t, r, joined, "joined the group")
		require.NoError(t, r.Term(runWait), "exit 0")
		out := strings.TrimRight(logs.String(), "\n")
		assert.Contains(t, out, "left the consumer group as a static member")
		assert.Contains(t, out[strings.LastIndexByte(out, '\n')+1:], drainedLine)
	})

	t.Run("an argument", func(t *testing.T) {
		// `docker run IMAGE lockctl run ...` reaches lockworker, the
		// image's entrypoint, with arguments: refused before anything
		// starts (no environment here would let a replica start anyway).
		out, err := exec.Command(bins[0], "lockctl", "query", "--lock", "x").CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, string(out))
		require.Equal(t, 2, exit.ExitCode(), string(out))
		require.Contains(t, string(out), "lockworker takes no arguments")
		require.Contains(t, string(out), "--entrypoint lockctl")
	})

	t.Run("second signal", func(t *testing.T) {
		kafka, _ := externalKafka(t)
		joined := sent(kafka, kmsg.SyncGroup)
		// The drain ends with leaving the group: held, it lasts until the
		// second signal, or until Close gives up on it (10 s).
		leaving, release := kafkatest.HoldFirst(kafka, kmsg.LeaveGroup)
		t.Cleanup(release) // before the broker closes
		r, logs := start(t, kafka)
		awaitRequest(t, r, joined, "joined the group")
		require.NoError(t, r.Signal(syscall.SIGTERM))
		awaitRequest(t, r, leaving, "left the group")
		err := r.Interrupt(runWait) // Ctrl-C, however soon after the first
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit)
		require.Equal(t, 1, exit.ExitCode(), err)
		assert.Contains(t, logs.String(), "second signal: exiting now")
		assert.NotContains(t, logs.String(), drainedLine, "said before the exit 1 it came to")
	})

	t.Run("its log's reader gone", func(t *testing.T) {
		// `lockworker 2>&1 | jq` stopped with Ctrl-C: the reader dies of
		// the same SIGINT, and the drain's first line goes to a closed
		// pipe. Go would end the process with SIGPIPE there, before the
		// drain; lockworker ignores it and exits 0 once drained.
		kafka, _ := externalKafka(t)
		joined := sent(kafka, kmsg.SyncGroup)
		read, write, err := os.Pipe()
		require.NoError(t, err)
		cmd := exec.Command(bins[0])
		childproc.DieWithParent(cmd)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+url, "KAFKA_BOOTSTRAP_SERVERS="+kafka.ListenAddrs()[0],
			"HTTP_ADDR=127.0.0.1:0", "LOG_FORMAT=json", "LOG_LEVEL=info")
		cmd.Stdout, cmd.Stderr = write, write
		require.NoError(t, cmd.Start())
		require.NoError(t, write.Close())
		t.Cleanup(func() { _ = cmd.Process.Kill() })
		select {
		case <-joined:
		case <-time.After(runWait):
			t.Fatalf("lockworker did not join the group in %s", runWait)
		}
		require.NoError(t, read.Close())
		require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			require.NoError(t, err, "drained and exited 0, not killed by SIGPIPE")
		case <-time.After(runWait):
			t.Fatalf("lockworker did not exit in %s of the signal", runWait)
		}
	})
}

// sent is closed once kafka received a request of key: SyncGroup's says
// the worker serves (it joins the group once it consumes) and has a member
// id, so that its drain leaves the group.
func sent(kafka *kfake.Cluster, key kmsg.Key) <-chan struct{} {
	seen, release := kafkatest.HoldFirst(kafka, key)
	release() // nothing held, only seen
	return seen
}

// awaitRequest waits until held (kafkatest.HoldFirst's) says r's request
// reached the broker, what r did then, failing the test if r exits first or
// runWait passes.
func awaitRequest(t *testing.T, r *chaos.Replica, held <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-held:
	case <-r.Exited():
		t.Fatalf("%v before it %s", r.Err(), what)
	case <-time.After(runWait):
		t.Fatalf("lockworker never %s in %s", what, runWait)
	}
}

// A stop while starting that cut short retries of PostgreSQL says why at
// Warn, with the step: the exit is 0 (asked for), but a replica that never
// got to serve should not look like a plain stop.
func TestStopWhileStartingRetryingPostgres(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	st, err := store.Open(ctx, store.Config{URL: testdb.NewSchema(t).URL, MaxConns: 1})
	require.NoError(t, err)
	defer st.Close()
	err = st.InTx(ctx, func(pgx.Tx) error {
		cancel() // the signal, while the transaction fails and is to be retried
		return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
	})
	require.ErrorIs(t, err, context.Canceled)

	logs := &testlog.Buffer{}
	m := NewMain()
	m.Logger = zerolog.New(logs)
	m.starting("publishing the first lock states")
	require.Equal(t, 0, m.exitCode(err, true))
	line := logLine(t, logs.String(), "lockworker stopped while starting")
	assert.Contains(t, line, `"level":"warn"`)
	assert.Contains(t, line, `"step":"publishing the first lock states"`)
	assert.Contains(t, line, "could not serialize access")

	require.Equal(t, 1, m.exitCode(err, false), "not signalled: a failure")
}

// logLine is the line of logs that holds msg.
func logLine(t *testing.T, logs, msg string) string {
	t.Helper()
	for line := range strings.Lines(logs) {
		if strings.Contains(line, msg) {
			return line
		}
	}
	t.Fatalf("no log line says %q", msg)
	return ""
}
